// torchrun's environment variables and the ranges of the distributed numbers (internal: lib/distributed
// and the tests use them; the public ones are re-exported by ./index.ts).
import { describeRange, inRange, type NumberRange } from '../core/range.js';

/** The ranges of the distributed numbers (c10d's ranks and sizes are C ints). */
export const RANK_RANGE: NumberRange = { integer: true, min: 0, max: 2147483646 };
export const WORLD_SIZE_RANGE: NumberRange = { integer: true, min: 1, max: 2147483647 };
export const PORT_RANGE: NumberRange = { integer: true, min: 0, max: 65535 };
/** Milliseconds: at most 2^31 - 1 (about 24.8 days), as Node's timers; larger ones would overflow libtorch's socket waits. */
export const TIMEOUT_MS_RANGE: NumberRange = { integer: true, min: 1, max: 2147483647 };

export function envInt(env: NodeJS.ProcessEnv, name: string, range: NumberRange, dflt?: number): number {
  const v = env[name];
  if (v === undefined || v === '') {
    if (dflt === undefined)
      throw new Error(`dist: ${name} is not set (start the job with \`residual launch\` or torchrun, or pass it in the options)`);
    return dflt;
  }
  const n = /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!inRange(n, range)) throw new RangeError(`dist: ${name} must be ${describeRange(range)}, got '${v}'`);
  return n;
}

/** RESIDUAL_DIST_TIMEOUT (seconds, to the millisecond) as milliseconds; undefined when unset. */
export function envTimeoutMs(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env.RESIDUAL_DIST_TIMEOUT;
  if (v === undefined || v === '') return undefined;
  const s = v.trim() === '' ? NaN : Number(v);
  const ms = Math.round(s * 1000);
  if (!Number.isFinite(s) || Math.abs(s * 1000 - ms) > 1e-6 * Math.max(1, Math.abs(ms)) || !inRange(ms, TIMEOUT_MS_RANGE)) {
    throw new RangeError(`dist: RESIDUAL_DIST_TIMEOUT must be seconds in [0.001, 2147483.647] (whole milliseconds), got '${v}'`);
  }
  return ms;
}
