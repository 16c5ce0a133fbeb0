// Allowed ranges of numeric settings, written once and used both to check a value and to say what is
// allowed (in an error, or in `--help`). The CLI's flag specs and the trainer's config check share them.

/** The values a numeric setting may take. Every bound is optional; values must always be finite. */
export interface NumberRange {
  /** Whole numbers only (and within Number.MAX_SAFE_INTEGER). */
  integer?: boolean;
  min?: number;
  /** `min` itself is not allowed (value > min). */
  minExclusive?: boolean;
  max?: number;
  /** `max` itself is not allowed (value < max). */
  maxExclusive?: boolean;
}

/** Is `v` a finite number inside `r`? */
export function inRange(v: number, r: NumberRange = {}): boolean {
  if (typeof v !== 'number' || !Number.isFinite(v)) return false;
  if (r.integer && !Number.isSafeInteger(v)) return false;
  if (r.min !== undefined && (r.minExclusive ? !(v > r.min) : !(v >= r.min))) return false;
  if (r.max !== undefined && (r.maxExclusive ? !(v < r.max) : !(v <= r.max))) return false;
  return true;
}

/** What `r` allows, in words: 'an integer >= 1', 'a number in [0, 1)', 'a number > 0', 'a number'. */
export function describeRange(r: NumberRange = {}): string {
  const what = r.integer ? 'an integer' : 'a number';
  const { min, max } = r;
  if (min !== undefined && max !== undefined) return `${what} in ${r.minExclusive ? '(' : '['}${min}, ${max}${r.maxExclusive ? ')' : ']'}`;
  if (min !== undefined) return `${what} ${r.minExclusive ? '>' : '>='} ${min}`;
  if (max !== undefined) return `${what} ${r.maxExclusive ? '<' : '<='} ${max}`;
  return what;
}

/** Throws a RangeError `${name} must be <range>, got <v>` unless `v` is in `r`. */
export function checkRange(name: string, v: number, r: NumberRange = {}): void {
  if (!inRange(v, r)) throw new RangeError(`${name} must be ${describeRange(r)}, got ${String(v)}`);
}
