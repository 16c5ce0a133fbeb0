// A HistogramProto from a list of numbers: equal-width buckets between the smallest and the largest value
// (what PyTorch's add_histogram gives with numpy's fixed bins), plus the count, sum and sum of squares.
import type { HistogramProto } from './proto.js';

/** The most buckets a histogram may have (TensorBoard redraws every histogram with about 30). */
export const MAX_HISTOGRAM_BINS = 10_000;

/**
 * Buckets `values` into `bins` equal-width buckets from min to max. Non-finite values (NaN, +-Infinity)
 * cannot be placed on an axis and are left out, as are they from num, sum and sum_squares; a RangeError
 * if no finite value is left. All values equal: one bucket. Sums are taken in float64.
 *
 * The layout is TensorBoard's: bucket_limit[i] is the right edge of bucket i, and the left edge of
 * bucket 0 is `min` (bucket i holds values in [left, right), the last one includes max).
 */
export function makeHistogram(values: ArrayLike<number>, bins: number): HistogramProto {
  let min = Infinity,
    max = -Infinity,
    num = 0,
    sum = 0,
    sumSquares = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
    num++;
    sum += v;
    sumSquares += v * v;
  }
  if (num === 0)
    throw new RangeError(
      values.length === 0
        ? 'a histogram needs at least one value'
        : `a histogram needs at least one finite value (all ${values.length} are NaN or infinite)`,
    );
  if (min === max) return { min, max, num, sum, sum_squares: sumSquares, bucket_limit: [max], bucket: [num] };
  // Scaled before subtracting, so that max - min cannot overflow to Infinity.
  const width = max / bins - min / bins;
  // Right edges; bucket i is [edge i-1, edge i), the last one closed, and bucket 0 starts at min.
  const bucketLimit = Array.from({ length: bins }, (_, i) => (i === bins - 1 ? max : min + width * (i + 1)));
  const bucket = new Array<number>(bins).fill(0);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    let k = Math.min(bins - 1, Math.floor((v / bins - min / bins) / width));
    // The division can round across an edge: settle on the bucket the written edges give.
    while (k > 0 && v < bucketLimit[k - 1]) k--;
    while (k < bins - 1 && v >= bucketLimit[k]) k++;
    bucket[k]++;
  }
  return { min, max, num, sum, sum_squares: sumSquares, bucket_limit: bucketLimit, bucket };
}
