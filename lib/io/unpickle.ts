// A restricted pickle reader (protocols 2-5, the binary opcodes). It builds plain JS values and never
// runs code named by the pickle: every GLOBAL / STACK_GLOBAL is handed to the caller's findClass, which
// returns a value we implement ourselves (or refuses), and only such PyCallable values can be called by
// REDUCE / NEWOBJ. Anything else in the stream is an error.
//
// Python -> JS: None -> null, bool -> boolean, int -> number (bigint beyond 2^53), float -> number,
// str -> string, bytes -> Uint8Array, tuple and list -> Array, dict -> Map, set / frozenset -> Set.
//
// The work is linear in the pickle's length: every opcode does O(1) work plus the items it consumes,
// and memo references (BINGET, DUP) share objects instead of copying them. Shared and even cyclic
// structures can therefore come back; callers that walk the result must not assume a tree.
// Every failure is a BadFileError naming the file.
import { BadFileError } from '../core/errors.js';

/** A callable produced by findClass: REDUCE / NEWOBJ call `fn` with the argument tuple. */
export class PyCallable {
  constructor(
    readonly qualname: string,
    readonly fn: (args: unknown[]) => unknown,
  ) {}
}

export interface UnpickleOptions {
  /** Named in every error message. */
  file: string;
  /** Resolves GLOBAL module/name; must throw for anything it does not allow. */
  findClass(module: string, name: string): unknown;
  /** BINPERSID: turns a persistent id (e.g. torch's storage tuple) into a value. */
  persistentLoad?(pid: unknown): unknown;
  /** BUILD: applies `state` to `obj`, returning the object to keep on the stack; throws if unsupported. */
  build?(obj: unknown, state: unknown): unknown;
}

// Opcodes (byte values from CPython's pickle module).
const OP = {
  PROTO: 0x80,
  FRAME: 0x95,
  STOP: 0x2e,
  MARK: 0x28,
  POP: 0x30,
  POP_MARK: 0x31,
  DUP: 0x32,
  NONE: 0x4e,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  LONG1: 0x8a,
  LONG4: 0x8b,
  BINFLOAT: 0x47,
  BINUNICODE: 0x58,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  SHORT_BINSTRING: 0x55,
  BINSTRING: 0x54,
  BINBYTES: 0x42,
  SHORT_BINBYTES: 0x43,
  BINBYTES8: 0x8e,
  EMPTY_TUPLE: 0x29,
  TUPLE: 0x74,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  EMPTY_LIST: 0x5d,
  LIST: 0x6c,
  APPEND: 0x61,
  APPENDS: 0x65,
  EMPTY_DICT: 0x7d,
  DICT: 0x64,
  SETITEM: 0x73,
  SETITEMS: 0x75,
  EMPTY_SET: 0x8f,
  ADDITEMS: 0x90,
  FROZENSET: 0x91,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  MEMOIZE: 0x94,
  GLOBAL: 0x63,
  STACK_GLOBAL: 0x93,
  REDUCE: 0x52,
  BUILD: 0x62,
  NEWOBJ: 0x81,
  BINPERSID: 0x51,
} as const;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Reads one pickle from `data` and returns the value it describes. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const memo = new Map<number, unknown>();
  let stack: unknown[] = [];
  const marks: unknown[][] = []; // the stacks saved by MARK (as CPython's metastack)
  let pos = 0;
  let opPos = 0;

  const fail = (what: string): Error =>
    new BadFileError(`${opts.file}: corrupt or unsupported pickle: ${what} (at byte ${opPos})`, { path: opts.file });
  const need = (n: number): void => {
    if (n < 0 || pos + n > data.length) throw fail(`needs ${n} more bytes but the pickle ends at byte ${data.length} (truncated?)`);
  };
  const u8 = (): number => {
    need(1);
    return data[pos++];
  };
  const u16 = (): number => {
    need(2);
    const v = dv.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const i32 = (): number => {
    need(4);
    const v = dv.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const u32 = (): number => {
    need(4);
    const v = dv.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) throw fail(`length ${v} exceeds the pickle`);
    return Number(v);
  };
  const bytes = (n: number): Uint8Array => {
    if (n < 0) throw fail(`negative length ${n}`);
    need(n);
    const b = data.slice(pos, pos + n);
    pos += n;
    return b;
  };
  const text = (n: number): string => {
    const b = bytes(n);
    try {
      return utf8.decode(b);
    } catch {
      throw fail('a string is not valid UTF-8');
    }
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) throw fail('GLOBAL name is not newline-terminated');
    const s = text(end - pos);
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) throw fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) throw fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) throw fail('no MARK to pop to');
    stack = prev;
    return items;
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) throw fail(`memo entry ${i} was never stored`);
    return memo.get(i);
  };
  const call = (fn: unknown, args: unknown, how: string): unknown => {
    if (!(fn instanceof PyCallable)) throw fail(`${how} on a value that is not an allowed callable (${describe(fn)})`);
    if (!Array.isArray(args)) throw fail(`${how} of '${fn.qualname}' with arguments that are not a tuple`);
    return fn.fn(args);
  };
  const asList = (v: unknown, op: string): unknown[] => {
    if (!Array.isArray(v)) throw fail(`${op} on ${describe(v)}, expected a list`);
    return v;
  };
  const asDict = (v: unknown, op: string): Map<unknown, unknown> => {
    if (!(v instanceof Map)) throw fail(`${op} on ${describe(v)}, expected a dict`);
    return v;
  };

  for (;;) {
    opPos = pos;
    const op = u8();
    switch (op) {
      case OP.PROTO: {
        const v = u8();
        if (v > 5) throw fail(`pickle protocol ${v} is newer than 5`);
        break;
      }
      case OP.FRAME:
        u64(); // frames only group opcodes for buffered readers; the content follows inline
        break;
      case OP.STOP:
        return pop();
      case OP.MARK:
        marks.push(stack);
        stack = [];
        break;
      case OP.POP:
        pop();
        break;
      case OP.POP_MARK:
        popMark();
        break;
      case OP.DUP:
        stack.push(top());
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.BININT:
        stack.push(i32());
        break;
      case OP.BININT1:
        stack.push(u8());
        break;
      case OP.BININT2:
        stack.push(u16());
        break;
      case OP.LONG1:
        stack.push(decodeLong(bytes(u8())));
        break;
      case OP.LONG4: {
        stack.push(decodeLong(bytes(i32())));
        break;
      }
      case OP.BINFLOAT: {
        need(8);
        stack.push(dv.getFloat64(pos, false)); // pickle floats are big-endian
        pos += 8;
        break;
      }
      case OP.BINUNICODE:
        stack.push(text(u32()));
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(text(u8()));
        break;
      case OP.BINUNICODE8:
        stack.push(text(u64()));
        break;
      case OP.SHORT_BINSTRING: // Python 2 str; torch.load decodes these as UTF-8
        stack.push(text(u8()));
        break;
      case OP.BINSTRING:
        stack.push(text(i32()));
        break;
      case OP.BINBYTES:
        stack.push(bytes(u32()));
        break;
      case OP.SHORT_BINBYTES:
        stack.push(bytes(u8()));
        break;
      case OP.BINBYTES8:
        stack.push(bytes(u64()));
        break;
      case OP.EMPTY_TUPLE:
        stack.push([]);
        break;
      case OP.TUPLE: {
        const items = popMark(); // (not stack.push(popMark()): popMark replaces `stack`)
        stack.push(items);
        break;
      }
      case OP.TUPLE1:
        stack.push([pop()]);
        break;
      case OP.TUPLE2: {
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      }
      case OP.TUPLE3: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      }
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.LIST: {
        const items = popMark();
        stack.push(items);
        break;
      }
      case OP.APPEND: {
        const v = pop();
        asList(top(), 'APPEND').push(v);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        const list = asList(top(), 'APPENDS');
        for (const x of items) list.push(x); // (not push(...items): a long MARK would overflow the call stack)
        break;
      }
      case OP.EMPTY_DICT:
        stack.push(new Map());
        break;
      case OP.DICT: {
        const items = popMark();
        if (items.length % 2) throw fail('DICT with an odd number of items');
        const m = new Map();
        for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
        stack.push(m);
        break;
      }
      case OP.SETITEM: {
        const v = pop();
        const k = pop();
        asDict(top(), 'SETITEM').set(k, v);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        if (items.length % 2) throw fail('SETITEMS with an odd number of items');
        const m = asDict(top(), 'SETITEMS');
        for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
        break;
      }
      case OP.EMPTY_SET:
        stack.push(new Set());
        break;
      case OP.ADDITEMS: {
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) throw fail(`ADDITEMS on ${describe(s)}, expected a set`);
        for (const x of items) s.add(x);
        break;
      }
      case OP.FROZENSET: {
        const items = popMark();
        stack.push(new Set(items));
        break;
      }
      case OP.BINPUT:
        memo.set(u8(), top());
        break;
      case OP.LONG_BINPUT:
        memo.set(u32(), top());
        break;
      case OP.MEMOIZE:
        memo.set(memo.size, top());
        break;
      case OP.BINGET:
        stack.push(memoGet(u8()));
        break;
      case OP.LONG_BINGET:
        stack.push(memoGet(u32()));
        break;
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        stack.push(opts.findClass(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw fail('STACK_GLOBAL needs two strings');
        stack.push(opts.findClass(module, name));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const fn = pop();
        stack.push(call(fn, args, 'REDUCE'));
        break;
      }
      case OP.NEWOBJ: {
        const args = pop();
        const cls = pop();
        stack.push(call(cls, args, 'NEWOBJ'));
        break;
      }
      case OP.BUILD: {
        const state = pop();
        const obj = pop();
        if (!opts.build) throw fail(`BUILD on ${describe(obj)} is not supported`);
        stack.push(opts.build(obj, state));
        break;
      }
      case OP.BINPERSID: {
        const pid = pop();
        if (!opts.persistentLoad) throw fail('the pickle uses persistent ids, which this reader does not resolve');
        stack.push(opts.persistentLoad(pid));
        break;
      }
      default: {
        const ch = op >= 0x20 && op < 0x7f ? ` '${String.fromCharCode(op)}'` : '';
        throw fail(`opcode 0x${op.toString(16).padStart(2, '0')}${ch} is not supported`);
      }
    }
  }
}

/** Little-endian two's-complement integer of any length (LONG1 / LONG4), in time linear in its length. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let hex = '';
  for (let i = b.length - 1; i >= 0; i--) hex += (b[i] < 16 ? '0' : '') + b[i].toString(16);
  let v = BigInt(`0x${hex}`);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** A short description of a value for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v instanceof PyCallable) return `'${v.qualname}'`;
  if (Array.isArray(v)) return `a tuple/list of ${v.length}`;
  if (v instanceof Map) return 'a dict';
  if (v instanceof Set) return 'a set';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'object') return v.constructor?.name ?? 'an object';
  return `${typeof v} ${String(v).slice(0, 40)}`;
}
