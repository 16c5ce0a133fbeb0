// dtype names (as in PyTorch) and their libtorch ScalarType codes, as the addon reports them.
import { DtypeError } from '../core/errors.js';
import { native } from '../addon/binding.js';

export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int32' | 'int64' | 'uint8' | 'int8' | 'int16' | 'bool';

const DTYPE_NAMES: readonly DType[] = ['uint8', 'int8', 'int16', 'int32', 'int64', 'float16', 'float32', 'float64', 'bool', 'bfloat16'];

/** c10::ScalarType codes, from the addon (native.dtypeCodes). */
export const DTYPE_CODE: Readonly<Record<DType, number>> = Object.freeze(
  Object.fromEntries(
    DTYPE_NAMES.map((d) => {
      const c = native.dtypeCodes[d];
      if (typeof c !== 'number') throw new Error(`residual: the native addon reports no dtype code for ${d}`);
      return [d, c];
    }),
  ) as Record<DType, number>,
);

const CODE_DTYPE: Record<number, DType> = Object.fromEntries(Object.entries(DTYPE_CODE).map(([k, v]) => [v, k as DType]));

export const DTYPE_SIZE: Record<DType, number> = {
  uint8: 1,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  float16: 2,
  float32: 4,
  float64: 8,
  bool: 1,
  bfloat16: 2,
};

export function dtypeCode(d: DType, arg?: string): number;
export function dtypeCode(d: DType | undefined, arg?: string): number | undefined;
export function dtypeCode(d: DType | undefined, arg = 'dtype'): number | undefined {
  if (d === undefined) return undefined;
  const c = DTYPE_CODE[d];
  if (typeof c !== 'number')
    throw new DtypeError(`${arg}: unknown dtype '${String(d)}' (expected one of ${Object.keys(DTYPE_CODE).join(', ')})`);
  return c;
}

export function dtypeName(code: number): DType {
  const d = CODE_DTYPE[code];
  if (!d) throw new DtypeError(`unsupported native dtype code ${code}`);
  return d;
}

export function isFloating(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}

export type TypedArray =
  Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Int16Array | Uint16Array | Uint8ClampedArray;

/** The dtype a typed array holds without conversion. */
export function dtypeOfTypedArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Uint8Array || a instanceof Uint8ClampedArray) return 'uint8';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Int16Array) return 'int16';
  throw new TypeError('a Uint16Array is ambiguous (float16 or bfloat16 bits): pass {dtype}');
}

export function typedArrayFor(d: DType, buf: ArrayBuffer): TypedArray {
  switch (d) {
    case 'float32':
      return new Float32Array(buf);
    case 'float64':
      return new Float64Array(buf);
    case 'int32':
      return new Int32Array(buf);
    case 'int64':
      return new BigInt64Array(buf);
    case 'uint8':
    case 'bool':
      return new Uint8Array(buf);
    case 'int8':
      return new Int8Array(buf);
    case 'int16':
      return new Int16Array(buf);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(buf);
  }
}
