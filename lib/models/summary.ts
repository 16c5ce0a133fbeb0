// summary(model, inputShape): a table of the modules a forward pass runs through, with their output
// shapes and parameter counts, and the totals. The pass runs in eval mode without gradients on a zero
// input, with hooks recording each module's output; the model's modes are restored afterwards.
import { noGrad } from '../autograd/index.js';
import { Module, fmtShape } from '../nn/module.js';
import { DTYPE_SIZE } from '../tensor/dtype.js';
import { scope } from '../tensor/scope.js';
import { zeros } from '../tensor/tensor.js';

export interface SummaryRow {
  /** Qualified name ("layer1.0.conv1"). */
  name: string;
  type: string;
  /** Nesting depth: 0 for the model's direct children. */
  depth: number;
  outputShape: number[];
  /** Parameters of this module and its descendants. */
  params: number;
}
export interface SummaryData {
  rows: SummaryRow[];
  inputShape: number[];
  outputShape: number[];
  totalParams: number;
  trainableParams: number;
  /** Bytes of the parameters and of the buffers. */
  paramBytes: number;
  bufferBytes: number;
}

/** Runs the forward pass and collects the rows (see summary()). inputShape is [C, H, W] or [N, C, H, W]. */
export function summaryData(model: Module, inputShape: readonly number[]): SummaryData {
  if (!(model instanceof Module)) throw new TypeError('summary: the first argument must be a Module');
  if (
    !Array.isArray(inputShape) ||
    (inputShape.length !== 3 && inputShape.length !== 4) ||
    !inputShape.every((d) => Number.isInteger(d) && d > 0)
  ) {
    throw new TypeError(`summary: inputShape must be [C, H, W] or [N, C, H, W] with positive integers, got ${JSON.stringify(inputShape)}`);
  }
  const shape = inputShape.length === 3 ? [1, ...inputShape] : [...inputShape];
  const ref = model.parameters()[0] ?? model.buffers()[0];
  const rows: SummaryRow[] = [];
  const open: SummaryRow[] = [];
  const handles: { remove(): void }[] = [];
  const counts = new Map<Module, number>();
  for (const [name, m] of model.namedModules()) {
    if (m === model) continue;
    counts.set(m, m.numParameters());
    const depth = name.split('.').length - 1;
    handles.push(
      m.registerForwardPreHook(() => {
        const row: SummaryRow = { name, type: m.typeName, depth, outputShape: [], params: counts.get(m)! };
        rows.push(row);
        open.push(row);
      }),
    );
    handles.push(
      m.registerForwardHook((_m, _in, out) => {
        open.pop()!.outputShape = out.shape;
      }),
    );
  }
  const modes = model.modules().map((m) => [m, m.training] as const);
  let outputShape: number[];
  try {
    model.eval();
    outputShape = noGrad(() => scope(() => model.call(zeros(shape, { dtype: ref?.dtype, device: ref?.device })).shape));
  } finally {
    for (const h of handles) h.remove();
    for (const [m, t] of modes) m.training = t;
  }
  let paramBytes = 0;
  let trainable = 0;
  let total = 0;
  for (const p of model.parameters()) {
    total += p.numel();
    if (p.requiresGrad) trainable += p.numel();
    paramBytes += p.numel() * DTYPE_SIZE[p.dtype];
  }
  let bufferBytes = 0;
  for (const b of model.buffers()) bufferBytes += b.numel() * DTYPE_SIZE[b.dtype];
  return { rows, inputShape: shape, outputShape, totalParams: total, trainableParams: trainable, paramBytes, bufferBytes };
}

const num = (n: number): string => n.toLocaleString('en-US');
const mb = (b: number): string => (b / (1024 * 1024)).toFixed(2);

/**
 * A printable table: one line per module call (name indented by depth, type, output shape, parameters),
 * then total, trainable and non-trainable parameters and sizes. `maxDepth` hides deeper rows (e.g. 1
 * shows only the stages of a ResNet); the totals always cover the whole model.
 */
export function summary(model: Module, inputShape: readonly number[], opts: { maxDepth?: number } = {}): string {
  const d = summaryData(model, inputShape);
  const maxDepth = opts.maxDepth ?? Infinity;
  const table: [string, string, string][] = [['Layer (type)', 'Output shape', 'Param #']];
  for (const r of d.rows) {
    if (r.depth > maxDepth) continue;
    table.push([`${'  '.repeat(r.depth)}${r.name} (${r.type})`, fmtShape(r.outputShape), num(r.params)]);
  }
  const w0 = Math.max(...table.map((r) => r[0].length));
  const w1 = Math.max(...table.map((r) => r[1].length));
  const w2 = Math.max(...table.map((r) => r[2].length));
  const line = '-'.repeat(w0 + w1 + w2 + 4);
  const fmt = (r: [string, string, string]): string => `${r[0].padEnd(w0)}  ${r[1].padEnd(w1)}  ${r[2].padStart(w2)}`;
  const out = [
    `${model.typeName} summary, input ${fmtShape(d.inputShape)} -> output ${fmtShape(d.outputShape)}`,
    line,
    fmt(table[0]),
    line,
  ];
  for (const r of table.slice(1)) out.push(fmt(r));
  out.push(line);
  out.push(`Total params: ${num(d.totalParams)}`);
  out.push(`Trainable params: ${num(d.trainableParams)}`);
  out.push(`Non-trainable params: ${num(d.totalParams - d.trainableParams)}`);
  out.push(`Params size (MB): ${mb(d.paramBytes)}`);
  out.push(`Buffers size (MB): ${mb(d.bufferBytes)}`);
  return out.join('\n');
}
