// nn.Module: the base of every layer and network. A module owns named parameters (trainable tensors),
// named buffers (state such as BatchNorm's running statistics) and named child modules, all kept in
// registration order so that stateDict() keys come out exactly as PyTorch names them
// ("layer1.0.conv1.weight", "bn1.running_mean", ...).
//
// Ownership: the module owns its tensors. parameters()/buffers() return the live tensors themselves
// (do not dispose them); stateDict() returns new references (detached, sharing storage) that the
// caller may dispose without affecting the module.
import { noGrad } from '../autograd/index.js';
import { isFloating, type DType } from '../tensor/dtype.js';
import { DeviceError, DtypeError } from '../core/errors.js';
import { Tensor, hOf, isDeviceString, type Device, type MemoryFormat } from '../tensor/tensor.js';
import { native as N } from '../addon/binding.js';

export type StateDict = Record<string, Tensor>;
export type ForwardHook = (module: Module, input: Tensor, output: Tensor) => void;
export type ForwardPreHook = (module: Module, input: Tensor) => void;
export interface HookHandle {
  remove(): void;
}
export interface LoadResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

/** Shape as PyTorch prints it in messages: [2, 3, 32, 32]. */
export function fmtShape(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

export class Module {
  /** Training mode (BatchNorm uses batch statistics, Dropout drops); set by train()/eval(). */
  training = true;
  /** @internal registration-ordered entries; null marks an optional slot (e.g. a Linear without bias). */
  protected readonly _parameters = new Map<string, Tensor | null>();
  /** @internal */
  protected readonly _buffers = new Map<string, Tensor | null>();
  /** @internal */
  protected readonly _nonPersistent = new Set<string>();
  /** @internal */
  protected readonly _modules = new Map<string, Module>();
  /** Qualified name inside the root module ("layer1.0.conv1"); '' for a root. Used in error messages. */
  private _path = '';
  private _hooks: ForwardHook[] | undefined;
  private _preHooks: ForwardPreHook[] | undefined;

  /** The class name, as shown in summaries and messages. */
  get typeName(): string {
    return this.constructor.name;
  }
  /** The module's qualified name in its root ('' for the root itself). */
  get path(): string {
    return this._path;
  }
  /** "layer1.0.conv1 (Conv2d)", or just "Conv2d" for a root: how errors name this module. */
  label(): string {
    return this._path ? `${this._path} (${this.typeName})` : this.typeName;
  }

  // ---- registration ----

  /** Registers a trainable tensor under `name` (requiresGrad is turned on) and returns it. */
  registerParameter(name: string, t: Tensor | null): Tensor | null {
    this.checkName(name, this._parameters);
    if (t) t.requiresGrad_(true);
    this._parameters.set(name, t);
    return t;
  }
  /** Registers a buffer; persistent buffers appear in stateDict(). */
  registerBuffer(name: string, t: Tensor | null, persistent = true): Tensor | null {
    this.checkName(name, this._buffers);
    this._buffers.set(name, t);
    if (!persistent) this._nonPersistent.add(name);
    return t;
  }
  /**
   * Registers a child module under `name` and returns it (so `this.conv1 = this.registerModule('conv1', ...)`).
   * Registering an existing name replaces that child, as assigning `model.fc = ...` does in PyTorch; a
   * field of the same name that held the old child is updated too, so forward() uses the new one:
   * `model.registerModule('fc', new nn.Linear(512, 10))`.
   */
  registerModule<M extends Module>(name: string, m: M): M {
    this.checkName(name, this._modules);
    if (!(m instanceof Module)) throw new TypeError(`${this.label()}: registerModule('${name}') needs a Module, got ${String(m)}`);
    const old = this._modules.get(name);
    this._modules.set(name, m);
    m.setPath(this._path ? `${this._path}.${name}` : name);
    const self = this as unknown as Record<string, unknown>;
    if (old && Object.prototype.hasOwnProperty.call(this, name) && self[name] === old) self[name] = m;
    return m;
  }
  /** Alias of registerModule, as PyTorch's add_module. */
  addModule<M extends Module>(name: string, m: M): M {
    return this.registerModule(name, m);
  }

  private checkName(name: string, own: Map<string, unknown>): void {
    if (typeof name !== 'string' || name === '' || name.includes('.')) {
      throw new TypeError(`${this.label()}: invalid name '${String(name)}' (must be a non-empty string without '.')`);
    }
    const taken = [this._parameters, this._buffers, this._modules].some((m) => m !== own && m.has(name));
    if (taken) throw new Error(`${this.label()}: the name '${name}' is already used by another parameter, buffer or module`);
  }

  /** @internal sets the qualified name of this module and, recursively, of its children. */
  setPath(path: string): void {
    this._path = path;
    for (const [n, c] of this._modules) c.setPath(path ? `${path}.${n}` : n);
  }

  /** A registered parameter by name (throws if the slot is missing; null if it is empty). */
  protected param(name: string): Tensor | null {
    const t = this._parameters.get(name);
    if (t === undefined) throw new Error(`${this.label()}: no parameter '${name}'`);
    return t;
  }
  protected buffer(name: string): Tensor | null {
    const t = this._buffers.get(name);
    if (t === undefined) throw new Error(`${this.label()}: no buffer '${name}'`);
    return t;
  }

  // ---- traversal ----

  *namedChildren(): IterableIterator<[string, Module]> {
    yield* this._modules.entries();
  }
  children(): Module[] {
    return [...this._modules.values()];
  }
  /** This module and every descendant, depth first in registration order, with qualified names. */
  *namedModules(prefix = ''): IterableIterator<[string, Module]> {
    const seen = new Set<Module>();
    function* walk(m: Module, p: string): IterableIterator<[string, Module]> {
      if (seen.has(m)) return;
      seen.add(m);
      yield [p, m];
      for (const [n, c] of m._modules) yield* walk(c, p ? `${p}.${n}` : n);
    }
    yield* walk(this, prefix);
  }
  modules(): Module[] {
    return [...this.namedModules()].map(([, m]) => m);
  }
  /** Parameters with qualified names, in PyTorch's order (each module's own, then its children's). */
  *namedParameters(recurse = true): IterableIterator<[string, Tensor]> {
    const seen = new Set<Tensor>();
    const mods = recurse ? this.namedModules() : [['', this] as [string, Module]];
    for (const [p, m] of mods) {
      for (const [n, t] of m._parameters) {
        if (!t || seen.has(t)) continue;
        seen.add(t);
        yield [p ? `${p}.${n}` : n, t];
      }
    }
  }
  /** The live parameter tensors (owned by the module: do not dispose). */
  parameters(recurse = true): Tensor[] {
    return [...this.namedParameters(recurse)].map(([, t]) => t);
  }
  *namedBuffers(recurse = true): IterableIterator<[string, Tensor]> {
    const mods = recurse ? this.namedModules() : [['', this] as [string, Module]];
    for (const [p, m] of mods) {
      for (const [n, t] of m._buffers) if (t) yield [p ? `${p}.${n}` : n, t];
    }
  }
  buffers(recurse = true): Tensor[] {
    return [...this.namedBuffers(recurse)].map(([, t]) => t);
  }
  /** Number of parameter elements (all, or only those with requiresGrad). */
  numParameters(opts: { trainable?: boolean } = {}): number {
    let n = 0;
    for (const t of this.parameters()) if (!opts.trainable || t.requiresGrad) n += t.numel();
    return n;
  }

  // ---- modes and bulk operations ----

  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }
  eval(): this {
    return this.train(false);
  }
  /** Calls fn on every descendant, children before parents (as PyTorch), then returns this. */
  apply(fn: (m: Module) => void): this {
    for (const c of this._modules.values()) c.apply(fn);
    fn(this);
    return this;
  }
  /** Turns gradient recording on or off for every parameter (freezing). */
  requiresGrad_(requiresGrad = true): this {
    for (const p of this.parameters()) p.requiresGrad_(requiresGrad);
    return this;
  }
  /** Drops every parameter's gradient (setToNone, the default) or zeroes it in place. */
  zeroGrad(setToNone = true): void {
    for (const p of this.parameters()) {
      if (setToNone) {
        p.grad = null;
        continue;
      }
      const g = p.grad;
      if (g) {
        noGrad(() => g.zero_());
        g.dispose();
      }
    }
  }

  /**
   * Applies `fn` to every parameter, gradient and buffer of this module and its descendants (children
   * first, each module once), as PyTorch's Module._apply: `fn` returns the converted tensor, or its
   * argument itself to leave it as it is. The module keeps its tensor objects and takes the new data
   * in place (PyTorch's `param.data = fn(param)`), so optimizers and DistributedDataParallel made
   * earlier still hold the live parameters. A tensor `fn` returns is owned by _apply (disposed once its
   * data is taken). Runs without recording gradients. to() and its memory-format conversion use it.
   */
  _apply(fn: (t: Tensor) => Tensor): this {
    const seen = new Set<Module>();
    const visit = (m: Module): void => {
      if (seen.has(m)) return;
      seen.add(m);
      for (const c of m._modules.values()) visit(c);
      for (const table of [m._parameters, m._buffers]) {
        for (const t of table.values()) {
          if (!t) continue;
          const data = fn(t);
          const g = table === m._parameters ? t.grad : null; // read first: replacing the data drops the gradient
          replaceData(t, data);
          if (!g) continue;
          const ng = fn(g);
          if (data !== t || ng !== g) t.grad = ng;
          if (ng !== g) ng.dispose();
          g.dispose();
        }
      }
    };
    noGrad(() => visit(this));
    return this;
  }

  /**
   * Moves every parameter and buffer to a device, casts floating-point ones to a dtype (integer buffers
   * such as num_batches_tracked keep theirs), and/or puts the 4-D ones (convolution weights) in a memory
   * format: `model.to('cuda')`, `model.to('float64')`, `model.to({ memoryFormat: 'channelsLast' })`, as
   * PyTorch's `module.to(device, dtype, memory_format=torch.channels_last)`. Gradients follow their
   * parameters. Parameters and buffers stay the same tensor objects, their data updated in place:
   * optimizers and DDP made before still hold the live tensors.
   */
  to(target: Device | DType | { device?: Device; dtype?: DType; memoryFormat?: MemoryFormat }): this {
    const o = typeof target === 'string' ? (isDeviceString(target) ? { device: target as Device } : { dtype: target as DType }) : target;
    if (!o || typeof o !== 'object')
      throw new TypeError(`${this.label()}.to: expected a device, a dtype or {device, dtype, memoryFormat}, got ${String(target)}`);
    if (o.dtype !== undefined && !isFloating(o.dtype))
      throw new DtypeError(`${this.label()}.to: modules can only be cast to a floating dtype, got '${o.dtype}'`);
    if (o.device !== undefined && !isDeviceString(o.device))
      throw new DeviceError(`${this.label()}.to: unknown device '${String(o.device)}' (expected 'cpu', 'cuda' or 'cuda:N')`);
    const fmt = o.memoryFormat;
    if (fmt !== undefined && fmt !== 'contiguous' && fmt !== 'channelsLast')
      throw new TypeError(`${this.label()}.to: memoryFormat must be 'contiguous' or 'channelsLast', got ${JSON.stringify(fmt)}`);
    return this._apply((t) => {
      const dtype = o.dtype !== undefined && isFloating(t.dtype) && o.dtype !== t.dtype ? o.dtype : undefined;
      const device = o.device !== undefined && !sameDevice(o.device, t.device) ? o.device : undefined;
      const format = fmt !== undefined && t.ndim === 4 && !t.isContiguous(fmt) ? fmt : undefined;
      if (!dtype && !device && !format) return t;
      const moved = dtype || device ? t.to({ device, dtype }) : t;
      if (!format) return moved;
      const out = moved.contiguous(format);
      if (moved !== t) moved.dispose();
      return out;
    });
  }
  cpu(): this {
    return this.to('cpu');
  }
  cuda(index = 0): this {
    return this.to(`cuda:${index}`);
  }
  float(): this {
    return this.to('float32');
  }
  double(): this {
    return this.to('float64');
  }
  /** Frees every parameter and buffer now (the module is unusable afterwards). */
  dispose(): void {
    for (const m of this.modules()) {
      for (const t of m._parameters.values()) t?.dispose();
      for (const t of m._buffers.values()) t?.dispose();
    }
  }

  // ---- forward ----

  forward(_input: Tensor): Tensor {
    throw new Error(`${this.label()}: forward() is not implemented`);
  }
  /**
   * Runs the module: forward hooks around forward(). This is PyTorch's `module(x)`. Every module returns
   * a tensor the caller owns (never its input object), so callers may dispose what they get back.
   */
  call(input: Tensor): Tensor {
    if (this._preHooks) for (const h of this._preHooks) h(this, input);
    const out = this.forward(input);
    if (this._hooks) for (const h of this._hooks) h(this, input, out);
    return out;
  }
  registerForwardHook(fn: ForwardHook): HookHandle {
    const list = (this._hooks ??= []);
    list.push(fn);
    return { remove: () => void removeFrom(list, fn) };
  }
  registerForwardPreHook(fn: ForwardPreHook): HookHandle {
    const list = (this._preHooks ??= []);
    list.push(fn);
    return { remove: () => void removeFrom(list, fn) };
  }

  // ---- state dict ----

  /**
   * Parameters and persistent buffers by PyTorch key name, in PyTorch's order. The values are new
   * references (detached, sharing storage with the module's tensors): the caller may dispose them,
   * and writes into them change the module.
   */
  stateDict(): StateDict {
    const out: StateDict = {};
    for (const [k, t] of this.stateEntries()) out[k] = t.detach();
    return out;
  }

  /** @internal the live tensors behind stateDict(), in order. */
  private stateEntries(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [p, m] of this.namedModules()) {
      const key = (n: string): string => (p ? `${p}.${n}` : n);
      for (const [n, t] of m._parameters) if (t) out.push([key(n), t]);
      for (const [n, t] of m._buffers) if (t && !m._nonPersistent.has(n)) out.push([key(n), t]);
    }
    return out;
  }

  /**
   * Copies a state dict into the module. Every key, shape and dtype is checked first; on any problem
   * (missing or unexpected keys when strict, a shape mismatch, a non-tensor value, a floating/integer
   * mismatch) it throws an error that lists the offending keys with their shapes and changes nothing.
   * As PyTorch does for dicts without version metadata, a missing BatchNorm `num_batches_tracked` is
   * not an error: the module keeps its own count.
   */
  loadStateDict(dict: Record<string, unknown>, opts: { strict?: boolean } = {}): LoadResult {
    const strict = opts.strict ?? true;
    if (!dict || typeof dict !== 'object')
      throw new TypeError(`${this.label()}.loadStateDict: expected an object of name -> Tensor, got ${String(dict)}`);
    const own = new Map(this.stateEntries());
    const missing: string[] = [];
    const mismatched: string[] = [];
    const copies: [Tensor, Tensor][] = [];
    for (const [k, dst] of own) {
      if (!(k in dict)) {
        if (!k.endsWith('num_batches_tracked')) missing.push(k);
        continue;
      }
      const src = dict[k];
      if (!(src instanceof Tensor)) {
        mismatched.push(`${k}: expected a Tensor, got ${src === null ? 'null' : typeof src}`);
      } else if (src.disposed) {
        mismatched.push(`${k}: the tensor was disposed`);
      } else if (!sameShape(src.shape, dst.shape)) {
        mismatched.push(`${k}: model ${fmtShape(dst.shape)}, state dict ${fmtShape(src.shape)}`);
      } else if (isFloating(src.dtype) !== isFloating(dst.dtype) || (src.dtype === 'bool') !== (dst.dtype === 'bool')) {
        mismatched.push(`${k}: model ${dst.dtype}, state dict ${src.dtype}`);
      } else copies.push([dst, src]);
    }
    const unexpected = Object.keys(dict).filter((k) => !own.has(k));
    const problems: string[] = [];
    const list = (title: string, items: string[]): void => {
      if (!items.length) return;
      const shown = items.slice(0, 12).join('; ');
      problems.push(`${title} (${items.length}): ${shown}${items.length > 12 ? `; ... and ${items.length - 12} more` : ''}`);
    };
    const withShape = (k: string, t: unknown): string => (t instanceof Tensor && !t.disposed ? `${k} ${fmtShape(t.shape)}` : k);
    if (strict) {
      list(
        'missing keys',
        missing.map((k) => withShape(k, own.get(k))),
      );
      list(
        'unexpected keys',
        unexpected.map((k) => withShape(k, dict[k])),
      );
    }
    list('shape/dtype mismatches', mismatched);
    if (problems.length) {
      let hint = '';
      if (unexpected.length && unexpected.every((k) => k.startsWith('module.')))
        hint = "\n  hint: the keys carry DataParallel's 'module.' prefix; strip it first";
      throw new Error(
        `${this.label()}.loadStateDict: the state dict does not fit this model (nothing was loaded):\n  ${problems.join('\n  ')}${hint}`,
      );
    }
    noGrad(() => {
      for (const [dst, src] of copies) dst.copy_(src);
    });
    return { missingKeys: missing, unexpectedKeys: unexpected };
  }

  // ---- printing ----

  /** One-line description of the layer's configuration, e.g. "3, 64, kernelSize=[7, 7], stride=[2, 2]". */
  extraRepr(): string {
    return '';
  }
  /** A PyTorch-style nested description of the module. */
  toString(): string {
    const head = `${this.typeName}(${this.extraRepr()}`;
    if (!this._modules.size) return `${head})`;
    const lines = [...this._modules].map(([n, c]) => `  (${n}): ${c.toString().split('\n').join('\n  ')}`);
    return `${head}\n${lines.join('\n')}\n)`;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

function removeFrom<T>(list: T[], x: T): void {
  const i = list.indexOf(x);
  if (i >= 0) list.splice(i, 1);
}
function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
/** Gives `t` the data of `data` in place (the Tensor object stays), then disposes `data`; nothing when they are the same. */
function replaceData(t: Tensor, data: Tensor): void {
  if (data === t) return;
  try {
    N.tensorSetData(hOf(t), hOf(data));
  } finally {
    data.dispose();
  }
}
function sameDevice(want: Device, have: Device): boolean {
  return want === have || (want === 'cuda' && have === 'cuda:0') || (want === 'cuda:0' && have === 'cuda');
}
