// ONNX export: walks a network's module tree and writes the graph its eval-mode forward computes, with
// the weights as initializers named by their state-dict keys ("layer1.0.conv1.weight") and the nodes
// named by module paths ("layer1.0.conv1", "layer1.0.relu_1", "layer1.0/add").
//
// Each module class the exporter knows has an emitter that states, op by op, what that class's
// forward() does. Only those exact classes are exported: a subclass (whose forward may differ), a
// module whose forward was replaced, or any other module type stops the export with an error naming
// its path and type. There is no tracing and no guess, so there is no silently wrong graph.
//
// The encoding is protobufjs with ONNX's own schema (onnx.proto; ./proto.ts, ./onnx-schema.ts).
import fs from 'node:fs';
import os from 'node:os';
import { ShapeError } from '../core/errors.js';
import { writeFileAtomic } from '../core/fs.js';
import { checkRange } from '../core/range.js';
import { BasicBlock, Bottleneck, PlainBlock, PreActBlock, PreActBottleneck, ShortcutA } from '../models/resnet/blocks.js';
import { CifarResNet } from '../models/resnet/cifar.js';
import { ResNet } from '../models/resnet/imagenet.js';
import { PreActResNet } from '../models/resnet/preact.js';
import {
  AdaptiveAvgPool2d,
  AvgPool2d,
  BatchNorm2d,
  Conv2d,
  Dropout,
  Flatten,
  Identity,
  Linear,
  MaxPool2d,
  ReLU,
  Sequential,
} from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { Tensor } from '../tensor/tensor.js';
import {
  DataType,
  IR_VERSION,
  attribute,
  encodeModel,
  tensorValueInfo,
  type AttrValue,
  type NodeProto,
  type TensorProto,
} from './proto.js';

/** Opsets the exporter writes: every op it emits has the same semantics across them, and all fit IR version 8 (the schema's). */
export const ONNX_OPSETS = { min: 13, max: 18, default: 17 } as const;

export interface ExportOnnxOptions {
  /**
   * The input's shape: [C, H, W], or [N, C, H, W] (N is used only with dynamicBatch: false). The spatial
   * size is fixed in the graph: the option-A shortcuts and the global pooling work at any size, but the
   * exporter checks every layer's shapes for this one.
   */
  inputShape: readonly number[];
  /** ONNX opset version, 13..18 (default 17). */
  opset?: number;
  /** The batch dimension is a symbolic 'N' (default true); false fixes it to inputShape's N (or 1). */
  dynamicBatch?: boolean;
  /**
   * Fold each BatchNorm that directly follows a convolution into that convolution's weight and bias
   * (default false: BatchNormalization nodes). BatchNorms that follow no convolution (the pre-activation
   * ones) stay BatchNormalization nodes. The folded weights keep the convolution's key names.
   */
  foldBatchNorm?: boolean;
  /**
   * Per-channel input normalisation to put in front of the network ((x - mean) / std, as the training
   * data loader applies it), so that the ONNX model takes pixels scaled to [0, 1].
   */
  normalize?: { mean: readonly number[]; std: readonly number[] };
  /** Name of the graph input (default 'input'). */
  inputName?: string;
  /** Name of the graph output (default 'output'). */
  outputName?: string;
  /** Key/value strings stored in the model's metadata_props (e.g. the class names). */
  metadata?: Record<string, string>;
  /** The graph's doc_string. */
  docString?: string;
}

export interface OnnxExportInfo {
  opset: number;
  irVersion: number;
  /** The input and output shapes as written ('N' where the batch is dynamic). */
  inputShape: (number | string)[];
  outputShape: (number | string)[];
  /** Nodes by op type, e.g. { Conv: 20, BatchNormalization: 19, ... }. */
  ops: Record<string, number>;
  nodes: number;
  initializers: number;
  /** Number of initializer elements (the weights, after any folding). */
  elements: number;
  /** Size of the serialized model in bytes. */
  bytes: number;
}

type Dim = number | string;
interface Value {
  name: string;
  shape: Dim[];
}
interface Init {
  name: string;
  dims: number[];
  data: Float32Array | BigInt64Array;
  doc?: string;
}
type Emitter<M extends Module = Module> = (b: GraphBuilder, m: M, x: Value) => Value;

const INT64_MAX = 2n ** 63n - 1n;

/** Thrown (as a TypeError) for a module the exporter does not know. */
function unsupported(b: GraphBuilder, m: Module, why: string): TypeError {
  return new TypeError(`exportOnnx: ${b.label(m)} cannot be exported to ONNX: ${why}`);
}

class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly inits = new Map<string, Init>();
  private readonly used = new Set<string>();
  private readonly counts = new Map<string, number>();

  constructor(
    readonly paths: Map<Module, string>,
    readonly opset: number,
  ) {}

  /** "layer1.0.conv1 (Conv2d)"; the exported root is "the model (ResNet)". */
  label(m: Module): string {
    const p = this.paths.get(m);
    return p ? `${p} (${m.typeName})` : `the model (${m.typeName})`;
  }
  path(m: Module): string {
    const p = this.paths.get(m);
    if (p === undefined)
      throw new Error(
        `exportOnnx: ${m.typeName} is reached from the model but is not registered in it (modules must be registered with registerModule)`,
      );
    return p;
  }
  /** A fresh name from `base`: base, base_1, base_2, ... (a module called twice gives two nodes). */
  unique(base: string): string {
    let name = base;
    for (let n = this.counts.get(base) ?? 0; this.used.has(name); n++) {
      name = `${base}_${n + 1}`;
      this.counts.set(base, n + 1);
    }
    this.used.add(name);
    return name;
  }
  /** Reserves a name used by the graph's input. */
  reserve(name: string): void {
    this.used.add(name);
  }
  /** Adds a node; its output value has the node's name. */
  node(op: string, inputs: string[], base: string, shape: Dim[], attrs: Record<string, AttrValue> = {}, doc?: string): Value {
    const name = this.unique(base);
    const attribute_ = Object.entries(attrs).map(([k, v]) => attribute(k, v));
    this.nodes.push({ name, opType: op, input: inputs, output: [name], attribute: attribute_, ...(doc ? { docString: doc } : {}) });
    return { name, shape };
  }
  /** The name of a node made for an op inside module m's forward (not a child module): "layer1.0/add". */
  opName(m: Module, op: string): string {
    const p = this.path(m);
    return p ? `${p}/${op}` : op;
  }
  /** Adds module m's tensor `key` (a parameter or buffer) as a float32 initializer named by its state-dict key. */
  tensor(m: Module, key: string, t: Tensor | null): string {
    if (!t) throw unsupported(this, m, `its ${key} is not set`);
    const p = this.path(m);
    const name = p ? `${p}.${key}` : key;
    const have = this.inits.get(name);
    if (have) return name;
    if (t.disposed) throw new Error(`exportOnnx: ${this.label(m)}: its ${key} was disposed`);
    if (!['float32', 'float64', 'float16', 'bfloat16'].includes(t.dtype))
      throw unsupported(this, m, `its ${key} is ${t.dtype}, not a floating-point tensor`);
    const raw = t.toTypedArray(); // a contiguous copy on the CPU, whatever the device and memory format
    const data = raw instanceof Float32Array ? raw : Float32Array.from(raw as Float64Array);
    this.inits.set(name, { name, dims: [...t.shape], data });
    return name;
  }
  /** A constant initializer (float32 or int64). */
  constant(name: string, dims: number[], data: Float32Array | BigInt64Array): string {
    if (this.inits.has(name) || this.used.has(name)) name = this.unique(name);
    else this.used.add(name);
    this.inits.set(name, { name, dims, data });
    return name;
  }
}

// ------------------------------------------------------------------------------------ shape helpers

function pairs(shape: Dim[], m: Module, b: GraphBuilder, channels?: number): [Dim, number, number, number] {
  if (shape.length !== 4) throw new ShapeError(`exportOnnx: ${b.label(m)}: expected input [N, C, H, W], got [${shape.join(', ')}]`);
  const [n, c, h, w] = shape;
  if (channels !== undefined && c !== channels)
    throw new ShapeError(`exportOnnx: ${b.label(m)}: expected input [N, ${channels}, H, W], got [${shape.join(', ')}]`);
  return [n, c as number, h as number, w as number];
}

/** PyTorch's output size of a convolution or pooling window along one dimension. */
function windowOut(size: number, k: number, s: number, padBefore: number, padAfter: number, d: number, ceil: boolean): number {
  const span = size + padBefore + padAfter - d * (k - 1) - 1;
  let out = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  // PyTorch drops a last window that would start inside the right padding.
  if (ceil && (out - 1) * s >= size + padBefore) out -= 1;
  return out;
}

function checkPositive(b: GraphBuilder, m: Module, h: number, w: number, inShape: Dim[]): void {
  if (!(h >= 1 && w >= 1))
    throw new ShapeError(`exportOnnx: ${b.label(m)}: the input [${inShape.join(', ')}] is too small (output ${h}x${w})`);
}

// ------------------------------------------------------------------------------------ layers

const emitConv: Emitter<Conv2d> = (b, m, x) => {
  const [n, , h, w] = pairs(x.shape, m, b, m.inChannels);
  const [kh, kw] = m.kernelSize;
  const [sh, sw] = m.stride;
  const [dh, dw] = m.dilation;
  let pads: [number, number, number, number];
  if (m.padding === 'valid') pads = [0, 0, 0, 0];
  else if (m.padding === 'same') {
    if (sh !== 1 || sw !== 1) throw unsupported(b, m, "padding 'same' needs stride 1");
    const th = dh * (kh - 1),
      tw = dw * (kw - 1);
    pads = [Math.floor(th / 2), Math.floor(tw / 2), th - Math.floor(th / 2), tw - Math.floor(tw / 2)];
  } else pads = [m.padding[0], m.padding[1], m.padding[0], m.padding[1]];
  const oh = windowOut(h, kh, sh, pads[0], pads[2], dh, false);
  const ow = windowOut(w, kw, sw, pads[1], pads[3], dw, false);
  checkPositive(b, m, oh, ow, x.shape);
  const inputs = [x.name, b.tensor(m, 'weight', m.weight)];
  if (m.bias) inputs.push(b.tensor(m, 'bias', m.bias));
  return b.node('Conv', inputs, b.path(m) || 'conv', [n, m.outChannels, oh, ow], {
    kernel_shape: [kh, kw],
    strides: [sh, sw],
    pads,
    dilations: [dh, dw],
    group: m.groups,
  });
};

const emitBatchNorm: Emitter<BatchNorm2d> = (b, m, x) => {
  const [n, c, h, w] = pairs(x.shape, m, b, m.numFeatures);
  if (!m.trackRunningStats) throw unsupported(b, m, 'without running statistics it normalises with batch statistics even in eval mode');
  const inputs = [x.name];
  if (m.affine) inputs.push(b.tensor(m, 'weight', m.weight), b.tensor(m, 'bias', m.bias));
  else {
    const p = b.path(m);
    inputs.push(b.constant(`${p}/scale`, [c], new Float32Array(c).fill(1)), b.constant(`${p}/shift`, [c], new Float32Array(c)));
  }
  inputs.push(b.tensor(m, 'running_mean', m.runningMean), b.tensor(m, 'running_var', m.runningVar));
  return b.node('BatchNormalization', inputs, b.path(m) || 'bn', [n, c, h, w], { epsilon: { float: m.eps } });
};

const emitRelu: Emitter<ReLU> = (b, m, x) => b.node('Relu', [x.name], b.path(m) || 'relu', x.shape);

/** Pool output sizes; a ceilMode window past the floor-mode output cannot be exported with PyTorch's exact rule. */
function poolSizes(
  b: GraphBuilder,
  m: Module,
  h: number,
  w: number,
  k: [number, number],
  s: [number, number],
  p: [number, number],
  d: [number, number],
  ceil: boolean,
): [number, number] {
  const oh = windowOut(h, k[0], s[0], p[0], p[0], d[0], false);
  const ow = windowOut(w, k[1], s[1], p[1], p[1], d[1], false);
  if (ceil && (windowOut(h, k[0], s[0], p[0], p[0], d[0], true) !== oh || windowOut(w, k[1], s[1], p[1], p[1], d[1], true) !== ow)) {
    throw unsupported(b, m, `ceilMode adds a partial window at this input size (${h}x${w}); PyTorch's and ONNX's ceil rules differ there`);
  }
  return [oh, ow];
}

const emitMaxPool: Emitter<MaxPool2d> = (b, m, x) => {
  const [n, c, h, w] = pairs(x.shape, m, b);
  const [oh, ow] = poolSizes(b, m, h, w, m.kernelSize, m.stride, m.padding, m.dilation, m.ceilMode);
  checkPositive(b, m, oh, ow, x.shape);
  const attrs: Record<string, AttrValue> = {
    kernel_shape: [...m.kernelSize],
    strides: [...m.stride],
    pads: [m.padding[0], m.padding[1], m.padding[0], m.padding[1]],
  };
  if (m.dilation[0] !== 1 || m.dilation[1] !== 1) attrs.dilations = [...m.dilation];
  return b.node('MaxPool', [x.name], b.path(m) || 'maxpool', [n, c, oh, ow], attrs);
};

const emitAvgPool: Emitter<AvgPool2d> = (b, m, x) => {
  const [n, c, h, w] = pairs(x.shape, m, b);
  if (m.divisorOverride !== undefined) throw unsupported(b, m, 'divisorOverride has no ONNX AveragePool equivalent');
  const [oh, ow] = poolSizes(b, m, h, w, m.kernelSize, m.stride, m.padding, [1, 1], m.ceilMode);
  checkPositive(b, m, oh, ow, x.shape);
  return b.node('AveragePool', [x.name], b.path(m) || 'avgpool', [n, c, oh, ow], {
    kernel_shape: [...m.kernelSize],
    strides: [...m.stride],
    pads: [m.padding[0], m.padding[1], m.padding[0], m.padding[1]],
    count_include_pad: m.countIncludePad ? 1 : 0,
  });
};

const emitAdaptiveAvgPool: Emitter<AdaptiveAvgPool2d> = (b, m, x) => {
  const [n, c, h, w] = pairs(x.shape, m, b);
  const [oh, ow] = m.outputSize;
  if (oh === 1 && ow === 1) return b.node('GlobalAveragePool', [x.name], b.path(m) || 'avgpool', [n, c, 1, 1]);
  // Equal windows when the output divides the input: an ordinary average pooling.
  if (h % oh !== 0 || w % ow !== 0)
    throw unsupported(
      b,
      m,
      `output ${oh}x${ow} does not divide the input ${h}x${w} (uneven adaptive windows); export at an input size it divides`,
    );
  const k = [h / oh, w / ow];
  return b.node('AveragePool', [x.name], b.path(m) || 'avgpool', [n, c, oh, ow], { kernel_shape: k, strides: k, pads: [0, 0, 0, 0] });
};

/** torch.flatten(x, 1) of a 2-D or 4-D value: ONNX Flatten(axis=1). */
function flatten1(b: GraphBuilder, m: Module, x: Value, name: string): Value {
  const [n, ...rest] = x.shape;
  const numeric = rest.every((d): d is number => typeof d === 'number');
  if (!numeric || x.shape.length < 2)
    throw new ShapeError(`exportOnnx: ${b.label(m)}: cannot flatten [${x.shape.join(', ')}] from dimension 1`);
  return b.node('Flatten', [x.name], name, [n, rest.reduce((a, d) => a * d, 1)], { axis: 1 });
}

const emitFlatten: Emitter<Flatten> = (b, m, x) => {
  const last = x.shape.length - 1;
  const end = m.endDim < 0 ? m.endDim + x.shape.length : m.endDim;
  if (m.startDim !== 1 || end !== last)
    throw unsupported(b, m, `only Flatten(1, -1) is exported (got startDim=${m.startDim}, endDim=${m.endDim})`);
  return flatten1(b, m, x, b.path(m) || 'flatten');
};

const emitLinear: Emitter<Linear> = (b, m, x) => {
  if (x.shape.length !== 2)
    throw unsupported(b, m, `its input is [${x.shape.join(', ')}]; only a 2-D input [N, features] is exported (as Gemm)`);
  if (x.shape[1] !== m.inFeatures)
    throw new ShapeError(`exportOnnx: ${b.label(m)}: expected input [N, ${m.inFeatures}], got [${x.shape.join(', ')}]`);
  const inputs = [x.name, b.tensor(m, 'weight', m.weight)];
  if (m.bias) inputs.push(b.tensor(m, 'bias', m.bias));
  return b.node('Gemm', inputs, b.path(m) || 'fc', [x.shape[0], m.outFeatures], { transB: 1 });
};

/** Identity (and Dropout, the identity in eval mode): no node, the value passes through. */
const passThrough: Emitter = (_b, _m, x) => x;

const emitSequential: Emitter<Sequential> = (b, m, x) => {
  let y = x;
  for (const [, c] of m.namedChildren()) y = emit(b, c, y);
  return y;
};

function add(b: GraphBuilder, m: Module, a: Value, c: Value): Value {
  if (a.shape.join() !== c.shape.join())
    throw new ShapeError(
      `exportOnnx: ${b.label(m)}: the residual branch [${a.shape.join(', ')}] and the shortcut [${c.shape.join(', ')}] differ`,
    );
  return b.node('Add', [a.name, c.name], b.opName(m, 'add'), a.shape);
}

// ------------------------------------------------------------------------------------ residual blocks

const emitShortcutA: Emitter<ShortcutA> = (b, m, x) => {
  const [n, , h, w] = pairs(x.shape, m, b, m.inPlanes);
  const p = b.path(m);
  let y = x;
  const s = m.stride;
  if (s !== 1) {
    // x[:, :, ::s, ::s]
    const starts = b.constant(`${p}/slice.starts`, [2], new BigInt64Array([0n, 0n]));
    const ends = b.constant(`${p}/slice.ends`, [2], new BigInt64Array([INT64_MAX, INT64_MAX]));
    const axes = b.constant(`${p}/slice.axes`, [2], new BigInt64Array([2n, 3n]));
    const steps = b.constant(`${p}/slice.steps`, [2], new BigInt64Array([BigInt(s), BigInt(s)]));
    y = b.node('Slice', [y.name, starts, ends, axes, steps], b.opName(m, 'slice'), [n, m.inPlanes, Math.ceil(h / s), Math.ceil(w / s)]);
  }
  const extra = m.outPlanes - m.inPlanes;
  if (extra > 0) {
    // zero channels, half before and half after
    const before = Math.floor(extra / 2);
    const pads = b.constant(`${p}/pad.pads`, [8], new BigInt64Array([0n, BigInt(before), 0n, 0n, 0n, BigInt(extra - before), 0n, 0n]));
    y = b.node('Pad', [y.name, pads], b.opName(m, 'pad'), [y.shape[0], m.outPlanes, y.shape[2], y.shape[3]], { mode: 'constant' });
  }
  return y;
};

const emitBasicBlock: Emitter<BasicBlock> = (b, m, x) => {
  const fx = emit(b, m.bn2, emit(b, m.conv2, emit(b, m.relu, emit(b, m.bn1, emit(b, m.conv1, x)))));
  const sc = m.downsample ? emit(b, m.downsample, x) : x;
  return emit(b, m.relu, add(b, m, fx, sc));
};

const emitBottleneck: Emitter<Bottleneck> = (b, m, x) => {
  const a = emit(b, m.relu, emit(b, m.bn1, emit(b, m.conv1, x)));
  const c = emit(b, m.relu, emit(b, m.bn2, emit(b, m.conv2, a)));
  const fx = emit(b, m.bn3, emit(b, m.conv3, c));
  const sc = m.downsample ? emit(b, m.downsample, x) : x;
  return emit(b, m.relu, add(b, m, fx, sc));
};

const emitPlainBlock: Emitter<PlainBlock> = (b, m, x) =>
  emit(b, m.relu, emit(b, m.bn2, emit(b, m.conv2, emit(b, m.relu, emit(b, m.bn1, emit(b, m.conv1, x))))));

const emitPreActBlock: Emitter<PreActBlock> = (b, m, x) => {
  const preact = emit(b, m.relu, emit(b, m.bn1, x));
  const fx = emit(b, m.conv2, emit(b, m.relu, emit(b, m.bn2, emit(b, m.conv1, preact))));
  const sc = m.downsample ? emit(b, m.downsample, preact) : x;
  return add(b, m, fx, sc); // no activation after the addition
};

const emitPreActBottleneck: Emitter<PreActBottleneck> = (b, m, x) => {
  const preact = emit(b, m.relu, emit(b, m.bn1, x));
  const a = emit(b, m.conv1, preact);
  const c = emit(b, m.conv2, emit(b, m.relu, emit(b, m.bn2, a)));
  const fx = emit(b, m.conv3, emit(b, m.relu, emit(b, m.bn3, c)));
  const sc = m.downsample ? emit(b, m.downsample, preact) : x;
  return add(b, m, fx, sc);
};

// ------------------------------------------------------------------------------------ networks

const emitResNet: Emitter<ResNet> = (b, m, x) => {
  let y = emit(b, m.maxpool, emit(b, m.relu, emit(b, m.bn1, emit(b, m.conv1, x))));
  for (const l of [m.layer1, m.layer2, m.layer3, m.layer4]) y = emit(b, l, y);
  return emit(b, m.fc, flatten1(b, m, emit(b, m.avgpool, y), b.opName(m, 'flatten')));
};

const emitCifarResNet: Emitter<CifarResNet> = (b, m, x) => {
  let y = emit(b, m.relu, emit(b, m.bn1, emit(b, m.conv1, x)));
  for (const l of [m.layer1, m.layer2, m.layer3]) y = emit(b, l, y);
  return emit(b, m.fc, flatten1(b, m, emit(b, m.avgpool, y), b.opName(m, 'flatten')));
};

const emitPreActResNet: Emitter<PreActResNet> = (b, m, x) => {
  let y = emit(b, m.conv1, x);
  for (const l of [m.layer1, m.layer2, m.layer3]) y = emit(b, l, y);
  y = emit(b, m.relu, emit(b, m.bn, y)); // the final activation the last unit leaves out
  return emit(b, m.fc, flatten1(b, m, emit(b, m.avgpool, y), b.opName(m, 'flatten')));
};

/** The classes the exporter knows, each with the emitter of its forward. Exact classes only. */
const EMITTERS = new Map<object, Emitter<never>>([
  [Conv2d.prototype, emitConv],
  [BatchNorm2d.prototype, emitBatchNorm],
  [ReLU.prototype, emitRelu],
  [MaxPool2d.prototype, emitMaxPool],
  [AvgPool2d.prototype, emitAvgPool],
  [AdaptiveAvgPool2d.prototype, emitAdaptiveAvgPool],
  [Flatten.prototype, emitFlatten],
  [Linear.prototype, emitLinear],
  [Identity.prototype, passThrough],
  [Dropout.prototype, passThrough],
  [Sequential.prototype, emitSequential],
  [ShortcutA.prototype, emitShortcutA],
  [BasicBlock.prototype, emitBasicBlock],
  [Bottleneck.prototype, emitBottleneck],
  [PlainBlock.prototype, emitPlainBlock],
  [PreActBlock.prototype, emitPreActBlock],
  [PreActBottleneck.prototype, emitPreActBottleneck],
  [ResNet.prototype, emitResNet],
  [CifarResNet.prototype, emitCifarResNet],
  [PreActResNet.prototype, emitPreActResNet],
]);

/** The module types exportOnnx knows, by class name. */
export const ONNX_EXPORTABLE: readonly string[] = [...EMITTERS.keys()].map(
  (p) => (p as { constructor: { name: string } }).constructor.name,
);

function emit(b: GraphBuilder, m: Module, x: Value): Value {
  const proto = Object.getPrototypeOf(m) as object | null;
  const e = proto ? EMITTERS.get(proto) : undefined;
  if (!e) {
    const known = proto && [...EMITTERS.keys()].find((k) => k.isPrototypeOf(m));
    const why = known
      ? `it is a subclass of ${(known as { constructor: { name: string } }).constructor.name}, whose forward it may change`
      : 'the exporter does not know this module type';
    throw unsupported(b, m, `${why} (known: ${ONNX_EXPORTABLE.join(', ')})`);
  }
  if (Object.prototype.hasOwnProperty.call(m, 'forward')) throw unsupported(b, m, 'its forward() was replaced on the instance');
  return (e as Emitter)(b, m, x);
}

// ------------------------------------------------------------------------------------ BatchNorm folding

/** Folds BatchNormalization nodes into the Conv that produces their input (when nothing else reads it). */
function foldBatchNorms(b: GraphBuilder, outputs: Set<string>): void {
  const producer = new Map<string, NodeProto>();
  const readers = new Map<string, number>();
  for (const n of b.nodes) {
    for (const o of n.output!) producer.set(o, n);
    for (const i of n.input!) readers.set(i, (readers.get(i) ?? 0) + 1);
  }
  const drop = new Set<NodeProto>();
  const rename = new Map<string, string>();
  for (const bn of b.nodes) {
    if (bn.opType !== 'BatchNormalization') continue;
    const conv = producer.get(bn.input![0]);
    if (!conv || conv.opType !== 'Conv' || readers.get(conv.output![0]) !== 1 || outputs.has(conv.output![0])) continue;
    const wName = conv.input![1];
    if (readers.get(wName) !== 1 || (conv.input![2] && readers.get(conv.input![2]) !== 1)) continue; // a weight shared with another node stays as it is
    const [, scaleN, shiftN, meanN, varN] = bn.input!;
    const eps = bn.attribute!.find((a) => a.name === 'epsilon')!.f as number;
    const W = b.inits.get(wName)!;
    const [scale, shift, mean, vr] = [scaleN, shiftN, meanN, varN].map((n) => b.inits.get(n)!.data as Float32Array);
    const out = W.dims[0];
    const per = W.data.length / out;
    const bias = conv.input![2] ? (b.inits.get(conv.input![2])!.data as Float32Array) : new Float32Array(out);
    const w2 = new Float32Array(W.data.length);
    const b2 = new Float32Array(out);
    for (let o = 0; o < out; o++) {
      // y = (conv(x) + bias - mean) * scale / sqrt(var + eps) + shift, computed in float64
      const f = scale[o] / Math.sqrt(vr[o] + Math.fround(eps));
      for (let i = o * per; i < (o + 1) * per; i++) w2[i] = (W.data as Float32Array)[i] * f;
      b2[o] = (bias[o] - mean[o]) * f + shift[o];
    }
    const convPath = conv.name!;
    const biasName = conv.input![2] ?? (wName.endsWith('.weight') ? `${wName.slice(0, -'.weight'.length)}.bias` : `${wName}.bias`);
    const doc = `${convPath} with ${bn.name} folded in`;
    b.inits.set(wName, { name: wName, dims: W.dims, data: w2, doc });
    b.inits.set(biasName, { name: biasName, dims: [out], data: b2, doc });
    conv.input = [conv.input![0], wName, biasName];
    conv.docString = doc;
    drop.add(bn);
    // The folded node takes over the BatchNorm's place: a graph output keeps its name, otherwise the
    // readers of the BatchNorm's output read the convolution's.
    if (outputs.has(bn.output![0])) conv.output = [bn.output![0]];
    else rename.set(bn.output![0], conv.output![0]);
  }
  if (!drop.size) return;
  const kept = b.nodes.filter((n) => !drop.has(n));
  for (const n of kept) n.input = n.input!.map((i) => rename.get(i) ?? i);
  b.nodes.splice(0, b.nodes.length, ...kept);
  const live = new Set(kept.flatMap((n) => n.input!));
  for (const name of [...b.inits.keys()]) if (!live.has(name)) b.inits.delete(name);
}

// ------------------------------------------------------------------------------------ the API

function checkOptions(o: ExportOnnxOptions): { opset: number; dynamic: boolean; shape: [number, number, number, number] } {
  if (!o || typeof o !== 'object') throw new TypeError('exportOnnx: options with inputShape ([C, H, W] or [N, C, H, W]) are required');
  const s = o.inputShape;
  if (!Array.isArray(s) || (s.length !== 3 && s.length !== 4) || !s.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw new TypeError(`exportOnnx: inputShape must be [C, H, W] or [N, C, H, W] of positive integers, got ${JSON.stringify(s)}`);
  }
  const opset = o.opset ?? ONNX_OPSETS.default;
  checkRange('exportOnnx: opset', opset, { integer: true, min: ONNX_OPSETS.min, max: ONNX_OPSETS.max });
  const dynamic = o.dynamicBatch ?? true;
  if (typeof dynamic !== 'boolean') throw new TypeError(`exportOnnx: dynamicBatch must be a boolean, got ${String(dynamic)}`);
  if (o.foldBatchNorm !== undefined && typeof o.foldBatchNorm !== 'boolean')
    throw new TypeError(`exportOnnx: foldBatchNorm must be a boolean, got ${String(o.foldBatchNorm)}`);
  const shape = (s.length === 3 ? [1, ...s] : [...s]) as [number, number, number, number];
  return { opset, dynamic, shape };
}

/**
 * Builds the ONNX model of `model`'s eval-mode forward (BatchNorm with its running statistics, Dropout
 * off) and returns its bytes with a summary. The model itself is not changed and not run.
 */
export function toOnnx(model: Module, options: ExportOnnxOptions): { bytes: Uint8Array; info: OnnxExportInfo } {
  if (!(model instanceof Module)) throw new TypeError(`exportOnnx: expected a Module, got ${model === null ? 'null' : typeof model}`);
  const { opset, dynamic, shape } = checkOptions(options);
  if (os.endianness() !== 'LE') throw new Error('exportOnnx: ONNX raw tensor data is little-endian; this machine is big-endian');
  const inputName = options.inputName ?? 'input';
  const outputName = options.outputName ?? 'output';
  for (const [k, v] of [
    ['inputName', inputName],
    ['outputName', outputName],
  ] as const) {
    if (typeof v !== 'string' || !v) throw new TypeError(`exportOnnx: ${k} must be a non-empty string`);
  }
  if (inputName === outputName) throw new TypeError('exportOnnx: inputName and outputName must differ');

  const paths = new Map<Module, string>();
  for (const [p, m] of model.namedModules()) paths.set(m, p);
  const b = new GraphBuilder(paths, opset);
  b.reserve(inputName);
  b.reserve(outputName);
  const batch: Dim = dynamic ? 'N' : shape[0];
  const inShape: Dim[] = [batch, shape[1], shape[2], shape[3]];
  let x: Value = { name: inputName, shape: inShape };

  if (options.normalize) {
    const { mean, std } = options.normalize;
    const c = shape[1];
    const ok = (a: unknown, pos: boolean) =>
      Array.isArray(a) && a.length === c && a.every((v) => typeof v === 'number' && Number.isFinite(v) && (!pos || v > 0));
    if (!ok(mean, false) || !ok(std, true))
      throw new TypeError(
        `exportOnnx: normalize needs ${c} finite means and ${c} positive stds (one per input channel), got ${JSON.stringify(options.normalize)}`,
      );
    const meanN = b.constant('normalize.mean', [1, c, 1, 1], Float32Array.from(mean));
    const stdN = b.constant('normalize.std', [1, c, 1, 1], Float32Array.from(std));
    x = b.node('Sub', [x.name, meanN], 'normalize/sub', inShape);
    x = b.node('Div', [x.name, stdN], 'normalize/div', inShape);
  }

  let y = emit(b, model, x);
  if (y.name === inputName) y = b.node('Identity', [y.name], 'identity', y.shape);
  // The last node's output becomes the graph output.
  for (const n of b.nodes) {
    n.output = n.output!.map((o) => (o === y.name ? outputName : o));
    n.input = n.input!.map((i) => (i === y.name ? outputName : i));
  }
  const outShape = y.shape;
  if (options.foldBatchNorm) foldBatchNorms(b, new Set([outputName]));

  const initializer: TensorProto[] = [...b.inits.values()].map((t) => ({
    name: t.name,
    dims: t.dims,
    dataType: t.data instanceof Float32Array ? DataType.FLOAT : DataType.INT64,
    rawData: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    ...(t.doc ? { docString: t.doc } : {}),
  }));
  const pkg = packageVersion();
  const metadata = Object.entries(options.metadata ?? {}).map(([key, value]) => {
    if (typeof value !== 'string') throw new TypeError(`exportOnnx: metadata values must be strings (${key} is ${typeof value})`);
    return { key, value };
  });
  const bytes = encodeModel({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: opset }],
    producerName: 'residual',
    producerVersion: pkg,
    docString: options.docString ?? `${model.typeName} exported by residual ${pkg}`,
    metadataProps: metadata,
    graph: {
      name: model.typeName,
      node: b.nodes,
      initializer,
      input: [tensorValueInfo(inputName, inShape)],
      output: [tensorValueInfo(outputName, outShape)],
    },
  });
  const ops: Record<string, number> = {};
  for (const n of b.nodes) ops[n.opType!] = (ops[n.opType!] ?? 0) + 1;
  let elements = 0;
  for (const t of b.inits.values()) if (t.data instanceof Float32Array) elements += t.data.length;
  return {
    bytes,
    info: {
      opset,
      irVersion: IR_VERSION,
      inputShape: inShape,
      outputShape: outShape,
      ops,
      nodes: b.nodes.length,
      initializers: b.inits.size,
      elements,
      bytes: bytes.byteLength,
    },
  };
}

/**
 * Writes `model` as an ONNX file (atomically: a failed export leaves no partial file and keeps an
 * earlier one). See ExportOnnxOptions; e.g.
 *   exportOnnx(model, 'resnet20.onnx', { inputShape: [1, 28, 28] })   // batch dynamic, opset 17
 */
export function exportOnnx(model: Module, file: string, options: ExportOnnxOptions): OnnxExportInfo {
  if (typeof file !== 'string' || !file) throw new TypeError(`exportOnnx: expected a file path, got ${String(file)}`);
  const { bytes, info } = toOnnx(model, options);
  writeFileAtomic(file, bytes);
  return info;
}

let version: string | undefined;
function packageVersion(): string {
  if (version) return version;
  try {
    // dist/onnx/export.js and lib/onnx/export.ts are both two levels below the package root.
    const url = new URL('../../package.json', import.meta.url);
    version = (JSON.parse(fs.readFileSync(url, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    version = 'unknown';
  }
  return version;
}
