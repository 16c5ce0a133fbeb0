// The shapes of `residual explain`'s settings and results, shared by the experiments (explain.ts) and
// the figures (figures.ts), so neither imports the other's module.
import type { BlockMagnitude, LayerGradNorm } from './measure.js';

export type ExplainPreset = 'quick' | 'full';
export type Family = 'plain' | 'residual' | 'preact';

export interface ExplainSettings {
  /** The two depths of the degradation experiment (6n+2: 20, 32, 44, 56, 110). */
  depths: [number, number];
  /** Depth of the post- against pre-activation comparison (20, 56 or 110). */
  identityDepth: number;
  /** Depths of the plain and residual networks whose gradients are measured at initialisation. */
  gradientDepths: number[];
  /** Also measure the pre-activation ResNet-1001 (bottleneck units) at initialisation. */
  preact1001: boolean;
  /** Training iterations of each network. */
  iterations: number;
  batchSize: number;
  /** Iterations between measurements (training error window, test error, gradient norms). */
  evalEvery: number;
  /** Test images used for each test-error measurement. */
  testImages: number;
  /** Images in the batch the gradient norms and residual magnitudes are measured on. */
  probeBatch: number;
  lr: number;
  weightDecay: number;
  momentum: number;
  /** Synthetic set sizes (with data 'synthetic'). */
  syntheticTrain: number;
  syntheticTest: number;
}

/** One measurement point of a training run. */
export interface CurvePoint {
  iteration: number;
  /** Error (1 - accuracy) on the training batches since the previous point, in training mode. */
  trainError: number;
  trainLoss: number;
  /** Error on the test images, in evaluation mode. */
  testError: number;
  testLoss: number;
}

export interface TrainedNet {
  /** Label in the figures, e.g. 'plain-20', 'ResNet-20', 'pre-act ResNet-20'. */
  net: string;
  /** Registry name (residual models). */
  model: string;
  family: Family;
  depth: number;
  parameters: number;
  curve: CurvePoint[];
  /** Gradient norms of the layer weights after the training step at each measurement point. */
  gradients: { iteration: number; norms: number[] }[];
  /** |F(x)|/|x| per block on the probe batch, before and after training (residual networks only). */
  magnitudesInit: BlockMagnitude[];
  magnitudesTrained: BlockMagnitude[];
  seconds: number;
}

export interface InitGradients {
  net: string;
  model: string;
  family: Family;
  depth: number;
  norms: LayerGradNorm[];
}

export interface ExplainResult {
  preset: ExplainPreset;
  settings: ExplainSettings;
  seed: number;
  device: string;
  data: string;
  /** Every trained network (the degradation and identity-mapping runs). */
  runs: TrainedNet[];
  /** Gradient norms at initialisation. */
  initGradients: InitGradients[];
  /** What each figure shows in this run, in words (also under each figure in the HTML page). */
  findings: Record<FigureName, string>;
  seconds: number;
  /** CPU time of the whole process (all threads), user + system, in seconds. */
  cpuSeconds: number;
  files: { html: string; json: string; figures: Record<FigureName, { svg: string; png: string }> };
}

export type FigureName = 'degradation' | 'gradient-flow' | 'identity-mappings' | 'residual-magnitude';
