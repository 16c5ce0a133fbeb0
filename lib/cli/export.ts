// `residual export --checkpoint RUN --format onnx [--out FILE]`: a run's network (or a bare state dict
// with --model) as an ONNX file for ONNX Runtime, with the run's input normalisation in front so that the
// file takes pixels scaled to [0, 1], and the class names in its metadata.
import fs from 'node:fs';
import path from 'node:path';
import { IMAGENET_MEAN, IMAGENET_STD } from '../data/stream.js';
import { load } from '../io/index.js';
import { createModel, getModelInfo } from '../models/registry.js';
import type { Module } from '../nn/module.js';
import { exportOnnx, ONNX_OPSETS, type ExportOnnxOptions } from '../onnx/index.js';
import type { Tensor } from '../tensor/tensor.js';
import type { TrainConfig } from '../train/config.js';
import { isStreamedDataName } from '../train/config.js';
import { channelStats, loadData, loadTestData, type RunDataInfo } from '../train/data.js';
import { loadRunWeights } from '../train/state.js';
import { UsageError, type CommandSpec, type ParsedFlags } from './flags.js';

export const EXPORT_COMMAND: CommandSpec = {
  name: 'export',
  about: "Export a run's network as an ONNX file for ONNX Runtime (Node, web, Python, ...).",
  usage:
    'residual export --checkpoint runs/NAME --format onnx [--out FILE] [--opset N] [--fold-batch-norm] [--[no-]dynamic-batch] [--[no-]normalize] [--input C,H,W] [--force]',
  flags: {
    checkpoint: {
      type: 'string',
      required: true,
      valueName: 'path',
      help: 'a run folder, its checkpoint.json, or a .safetensors/.pt state dict (with --model and --input)',
    },
    format: { type: 'string', choices: ['onnx'], help: 'the file format', default: 'onnx' },
    out: { type: 'string', valueName: 'file', help: 'where to write it (default: model.onnx in the run folder, or beside the state dict)' },
    model: { type: 'string', valueName: 'name', help: "network name, for a bare state dict; a run folder's model is the run's" },
    opset: { type: 'int', range: { min: ONNX_OPSETS.min, max: ONNX_OPSETS.max }, help: 'ONNX opset version', default: ONNX_OPSETS.default },
    'fold-batch-norm': {
      type: 'boolean',
      help: 'fold each BatchNorm that follows a convolution into its weights (fewer nodes, the same logits within float32 rounding)',
      default: false,
    },
    'dynamic-batch': { type: 'boolean', help: 'a symbolic batch dimension N (--no-dynamic-batch: batch 1)', default: true },
    normalize: {
      type: 'boolean',
      help: "put the run's input normalisation (per-channel mean/std of the training images, as train and eval apply it; saved with the run) in the graph, so the file takes pixels in [0, 1]. --no-normalize: the file takes normalised images",
      default: true,
    },
    input: {
      type: 'string',
      pattern: /^\d+,\d+,\d+$/,
      valueName: 'C,H,W',
      help: "input shape; default: the run's images (Fashion-MNIST 1,28,28, CIFAR 3,32,32, ...)",
    },
    'data-path': {
      type: 'string',
      valueName: 'dir',
      help: "dataset folder, for a run whose checkpoint predates the saved normalisation (or an image-folder run's input size); default: the run's",
    },
    force: { type: 'boolean', help: 'replace the output file if it exists (otherwise an existing file is never overwritten)' },
    json: { type: 'boolean', help: 'print the result as JSON' },
  },
  notes: [
    'The file holds the eval-mode network (BatchNorm with its running statistics): input "input" [N, C, H, W],',
    'output "output" [N, classes] (logits); node names follow module paths, initializers the state-dict keys.',
    '',
    'Examples:',
    '  residual export --checkpoint runs/resnet20-fashion-mnist --format onnx',
    '  residual export --checkpoint runs/try --format onnx --out try.onnx --fold-batch-norm',
    '  residual export --checkpoint weights.safetensors --model resnet20 --input 1,28,28 --no-normalize --format onnx',
  ],
};

/** Reads a run's dataset, or says what it needed it for. */
function readData<T>(read: () => T, data: string, hint: string): T {
  try {
    return read();
  } catch (e) {
    throw new Error(
      `this needs the run's dataset (${data}), which could not be read: ${(e as Error).message.split('\n')[0]}\n  --data-path DIR points at it; ${hint}`,
    );
  }
}

const IMAGE_SHAPES: Partial<Record<TrainConfig['data'], number[]>> = {
  'fashion-mnist': [1, 28, 28],
  synthetic: [1, 28, 28],
  cifar10: [3, 32, 32],
  cifar100: [3, 32, 32],
};

/** numClasses and inChannels of a registry network, read from its weights (every one has conv1 and fc). */
function sizesFrom(weights: Record<string, Tensor>, who: string): { numClasses: number; inChannels: number } {
  const fc = weights['fc.weight'];
  const conv = weights['conv1.weight'];
  if (!fc || fc.ndim !== 2 || !conv || conv.ndim !== 4)
    throw new Error(
      `${who}: the weights have no fc.weight [classes, features] and conv1.weight [out, C, k, k]: not a residual network's state dict`,
    );
  return { numClasses: fc.shape[0], inChannels: conv.shape[1] };
}

export async function runExportFlags({ flags }: ParsedFlags): Promise<number> {
  const ck = flags.checkpoint as string;
  if ((flags.format ?? 'onnx') !== 'onnx') throw new UsageError(`residual export: --format must be onnx`);
  if (!fs.existsSync(ck)) throw new UsageError(`residual export: ${ck} does not exist`);
  const isRun = fs.statSync(ck).isDirectory() || ck.endsWith('.json');
  let modelName = flags.model as string | undefined;
  let config: Partial<TrainConfig> = {};
  let weights: Record<string, Tensor>;
  let defaultOut: string;
  let about: Record<string, string> = {};
  let saved: RunDataInfo | undefined;
  if (isRun) {
    const c = loadRunWeights(ck); // the checkpoint checked in full
    config = c.meta.config;
    saved = c.meta.data;
    if (modelName && getModelInfo(modelName).name !== config.model) {
      for (const w of Object.values(c.weights)) w.dispose();
      throw new UsageError(
        `residual export: --model ${modelName} does not match the run's model ${config.model} (leave --model out for a run folder)`,
      );
    }
    modelName = config.model;
    weights = c.weights;
    defaultOut = path.join(c.dir, 'model.onnx');
    about = { run: path.resolve(c.dir), epoch: String(c.meta.epoch), step: String(c.meta.globalStep), data: String(config.data ?? '') };
  } else {
    if (!modelName) throw new UsageError('residual export: --model is needed with a bare weights file');
    if (!flags.input) throw new UsageError('residual export: --input C,H,W is needed with a bare weights file');
    if (flags.normalize !== false)
      throw new UsageError(
        'residual export: a bare weights file has no run to take the normalisation from: add --no-normalize (the file then takes normalised images)',
      );
    weights = load(ck);
    defaultOut = ck.replace(/\.(safetensors|pt|pth|bin)$/i, '') + '.onnx';
  }
  let model: Module | undefined;
  try {
    const out = (flags.out as string | undefined) ?? defaultOut;
    if (fs.existsSync(out) && !flags.force)
      throw new UsageError(`residual export: ${out} exists; --force replaces it, --out FILE writes elsewhere`);
    const name = getModelInfo(modelName!).name;
    const sizes = sizesFrom(weights, `residual export: ${ck}`);
    model = createModel(name, sizes);
    model.loadStateDict(weights);
    model.eval();

    // The input shape and normalisation: the run's data, as train/eval see it. A run saves its
    // normalisation and classes with the checkpoint; an older one's are computed from its training set.
    let inputShape = flags.input ? String(flags.input).split(',').map(Number) : undefined;
    let normalize: ExportOnnxOptions['normalize'];
    let classes: string[] | undefined = saved?.classes;
    const data = config.data;
    const dataPath = (flags['data-path'] as string) ?? config.dataPath;
    const dataCfg = {
      data: data!,
      dataPath,
      seed: config.seed ?? 0,
      syntheticTrain: config.syntheticTrain,
      syntheticTest: config.syntheticTest,
    };
    const streamed = !!data && isStreamedDataName(data);
    if (!inputShape && streamed) inputShape = [3, config.imageSize ?? 224, config.imageSize ?? 224];
    if (!inputShape && data === 'folder') {
      // the image size of an image-folder run: its test images
      const t = readData(() => loadTestData(dataCfg).test, data, '--input C,H,W gives the input size');
      inputShape = t.images.shape.slice(1);
      t.images.dispose();
      t.labels.dispose();
    }
    if (flags.normalize !== false) {
      if (saved) normalize = { mean: saved.mean, std: saved.std };
      else if (streamed) normalize = { mean: IMAGENET_MEAN, std: IMAGENET_STD };
      else if (data) {
        const d = readData(
          () => loadData(dataCfg),
          data,
          '--no-normalize exports the network alone (its input is then the normalised image)',
        );
        normalize = channelStats(d.train.images);
        classes = d.train.classes;
        for (const t of [d.train.images, d.train.labels, d.test.images, d.test.labels]) t.dispose();
      }
    }
    inputShape ??= data ? IMAGE_SHAPES[data] : undefined;
    if (!inputShape)
      throw new UsageError(`residual export: the input size of this run cannot be told without its data: give --input C,H,W`);
    if (inputShape[0] !== sizes.inChannels)
      throw new UsageError(`residual export: --input has ${inputShape[0]} channels but the network takes ${sizes.inChannels}`);

    const metadata: Record<string, string> = { model: name, ...about };
    if (classes) metadata.classes = JSON.stringify(classes);
    if (normalize) metadata.normalize = JSON.stringify({ mean: normalize.mean, std: normalize.std, input: 'pixels scaled to [0, 1]' });
    const info = exportOnnx(model, out, {
      inputShape,
      opset: flags.opset as number | undefined,
      dynamicBatch: flags['dynamic-batch'] as boolean | undefined,
      foldBatchNorm: flags['fold-batch-norm'] as boolean | undefined,
      normalize,
      metadata,
      docString: `${name} exported by residual from ${isRun ? `the run ${path.resolve(ck)}` : path.resolve(ck)}`,
    });
    const res = { file: out, model: name, ...info, normalize: normalize ?? null, classes: classes ?? null };
    if (flags.json) console.log(JSON.stringify(res));
    else {
      const ops = Object.entries(info.ops)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      console.log(`${out}: ${name}, ONNX opset ${info.opset} (IR ${info.irVersion}), ${(info.bytes / 1e6).toFixed(2)} MB`);
      console.log(
        `  input  "input"  [${info.inputShape.join(', ')}] float32${normalize ? ', pixels scaled to [0, 1] (the normalisation is in the graph)' : ', normalised images'}`,
      );
      console.log(`  output "output" [${info.outputShape.join(', ')}] float32 logits${classes ? ` (${classes.join(', ')})` : ''}`);
      console.log(`  ${info.nodes} nodes (${ops}), ${info.initializers} initializers, ${info.elements.toLocaleString('en-US')} weights`);
    }
    return 0;
  } finally {
    model?.dispose();
    for (const w of Object.values(weights)) if (!w.disposed) w.dispose();
  }
}
