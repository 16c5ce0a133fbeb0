// residual: ResNet training for Node.js on libtorch. The public API, named like PyTorch in camelCase.
//
// Every name is listed here on purpose (as torchvision's __all__): what is not listed is internal and
// may change. test/unit/api.test.ts pins the list (names and kinds, with the namespaces' members); a
// change to it is a change to the API, made in both places.
import * as autogradNs from './autograd/index.js';
import * as data from './data/index.js';
import * as dist from './distributed/index.js';
import * as F from './nn/functional.js';
import * as nn from './nn/index.js';
import * as optim from './optim/index.js';

export { data, dist, F, nn, optim };

// ---- errors ----
export { BadFileError, DeviceError, DisposedTensorError, DtypeError, OutOfMemoryError, ResidualError, ShapeError } from './core/errors.js';

// ---- tensors ----
export {
  Tensor,
  tensor,
  zeros,
  ones,
  empty,
  full,
  arange,
  linspace,
  rand,
  randn,
  randint,
  randperm,
  eye,
  zerosLike,
  onesLike,
  fullLike,
  randLike,
  randnLike,
  cat,
  stack,
  where,
  pad,
  type Device,
  type MemoryFormat,
  type NestedArray,
  type Scalar,
  type Shape,
  type TensorLike,
  type TensorOptions,
} from './tensor/tensor.js';
export { DTYPE_SIZE, isFloating, type DType, type TypedArray } from './tensor/dtype.js';
export { scope, tidy } from './tensor/scope.js';
export {
  memory,
  cuda,
  manualSeed,
  getRngState,
  setRngState,
  setNumThreads,
  getNumThreads,
  maxNumThreads,
  setCpuMemoryCaching,
  getCpuMemoryCaching,
  buildInfo,
  setAutocast,
  autocast,
  type BuildInfo,
  type CudaMemoryStats,
  type MemoryInfo,
} from './tensor/memory.js';

// ---- autograd ----
export { grad, noGrad, enableGrad, isGradEnabled, setGradEnabled, type GradOptions } from './autograd/index.js';
export const autograd = autogradNs.autograd;

// ---- functional ops (also as F.*) ----
export {
  conv2d,
  batchNorm,
  relu,
  leakyRelu,
  gelu,
  silu,
  sigmoid,
  maxPool2d,
  avgPool2d,
  adaptiveAvgPool2d,
  adaptiveMaxPool2d,
  linear,
  dropout,
  softmax,
  logSoftmax,
  crossEntropy,
  nllLoss,
  mseLoss,
  oneHot,
} from './nn/functional.js';

// ---- weights: safetensors, PyTorch checkpoints ----
export {
  save,
  load,
  loadSafetensors,
  saveSafetensors,
  readSafetensorsHeader,
  MAX_SAFETENSORS_HEADER,
  loadTorchCheckpoint,
  loadTorchPickle,
  TorchDType,
  TorchStorage,
  type TorchLoadLimits,
} from './io/index.js';

// ---- models ----
export {
  BasicBlock,
  Bottleneck,
  PlainBlock,
  PreActBlock,
  PreActBottleneck,
  ShortcutA,
  projectionShortcut,
  type BlockOptions,
  type ResidualBlock,
} from './models/resnet/blocks.js';
export {
  ResNet,
  resnet18,
  resnet34,
  resnet50,
  resnet101,
  resnet152,
  resnext50_32x4d,
  wideResnet50_2,
  type BlockKind,
  type ModelOptions,
  type ResNetOptions,
} from './models/resnet/imagenet.js';
export {
  CifarResNet,
  cifarResnet,
  cifarPlain,
  resnet20,
  resnet32,
  resnet44,
  resnet56,
  resnet110,
  resnet1202,
  type CifarResNetOptions,
} from './models/resnet/cifar.js';
export { PreActResNet, preactResnet, preactResnet164, preactResnet1001, type PreActResNetOptions } from './models/resnet/preact.js';
export { MODELS, listModels, modelNames, getModelInfo, createModel, type ModelInfo } from './models/registry.js';
export { summary, summaryData, type SummaryData, type SummaryRow } from './models/summary.js';

// ---- TensorBoard event files ----
export {
  SummaryWriter,
  readEventFile,
  listEventFiles,
  truncateEventFiles,
  type AddOptions,
  type DataFormats,
  type EventFileContents,
  type HistogramProto,
  type SummaryValue,
  type SummaryWriterOptions,
  type TbEvent,
} from './tensorboard/index.js';

// ---- training ----
export { Trainer, type Progress } from './train/trainer.js';
export { DEFAULT_CONFIG, CONFIG_RANGES, validateConfig, type DataName, type TrainConfig } from './train/config.js';
export { loadData, channelStats } from './train/data.js';
export { resolveDevice, createRunModel } from './train/recipe.js';
export { readRunConfig, inspectRunFolder } from './train/run-folder.js';
export {
  CHECKPOINT_JSON,
  CHECKPOINT_WEIGHTS,
  saveCheckpoint,
  hasCheckpoint,
  loadCheckpoint,
  type CheckpointMeta,
} from './train/checkpoint.js';
export { evaluate, type BatchSource, type EvaluateOptions, type EvaluateResult } from './train/evaluate.js';
export {
  MetricsWriter,
  readMetrics,
  historyFromMetrics,
  type EpochMetrics,
  type EvalMetrics,
  type History,
  type MetricsRecord,
  type StepMetrics,
} from './train/metrics.js';
export {
  REPORT_SERIES,
  reportSummary,
  reportData,
  reportSpec,
  renderReportSvg,
  renderReportPngBuffer,
  renderReportPng,
  writeReport,
  type ReportPoint,
} from './train/report.js';
export { trainInWorker } from './train/worker.js';
export {
  CudaGraph,
  StaticBatch,
  GraphedTrainStep,
  captureTrainStep,
  cudaGraphsIncompatibility,
  cudnnBenchmark,
  setFusedOptimizer,
  syncOptimizerLr,
  isCapturing,
  type CudaGraphState,
  type TrainStepOptions,
} from './train/graphs.js';

// ---- residual explain ----
export {
  explain,
  EXPLAIN_PRESETS,
  type CurvePoint,
  type ExplainOptions,
  type ExplainPreset,
  type ExplainResult,
  type ExplainSettings,
  type Family,
  type FigureName,
  type InitGradients,
  type TrainedNet,
} from './explain/explain.js';
export { gradientNorms, currentGradientNorms, residualMagnitudes, type BlockMagnitude, type LayerGradNorm } from './explain/measure.js';

// ---- ONNX export ----
export { exportOnnx, toOnnx, ONNX_OPSETS, ONNX_EXPORTABLE, type ExportOnnxOptions, type OnnxExportInfo } from './onnx/index.js';
