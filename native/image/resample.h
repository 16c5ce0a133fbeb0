// Antialiased bilinear resampling of a crop of an image, as torch's _upsample_bilinear2d_aa
// (align_corners=False) and PIL's BILINEAR: the triangle filter, widened by the scale factor when
// downsampling, normalised per output.
#pragma once
#include <cstdint>

#include "image/types.h"

namespace residual::image {

// The crop `box` of `im` resized to [RH, RW]; of that, the window of OH x OW outputs at (oy, ox) is
// written to dst (planar [C, OH, OW], float), horizontally flipped if `flip`, as v * scale[c] + shift[c]
// (v in 0..255). The box must lie inside the region `im` holds. The intermediate buffer is bounded
// (kMaxResampleBytes): an ImageError says when a resize would need more.
void resizedCrop(const Image& im, const Box& box, int64_t RH, int64_t RW, int64_t oy, int64_t ox, int64_t OH, int64_t OW, bool flip,
                 const float* scale, const float* shift, float* dst);

}  // namespace residual::image
