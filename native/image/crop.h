// Crop geometry as torchvision computes it: RandomResizedCrop's box, Resize(shorter side) and
// CenterCrop's offsets.
#pragma once
#include <cstdint>

#include "image/types.h"

namespace residual::image {

struct RrcParams {
  double scaleLo = 0.08, scaleHi = 1.0, ratioLo = 3.0 / 4.0, ratioHi = 4.0 / 3.0;
};

// torchvision.transforms.RandomResizedCrop.get_params on an H x W image, with the splitmix stream `r`
// (image/splitmix.h) in place of torch's RNG: 10 tries with the area fraction uniform and the aspect
// ratio log-uniform, then the centre-crop fallback.
Box rrcBox(int64_t H, int64_t W, const RrcParams& p, uint64_t& r);

// torchvision Resize(size) with one int: the shorter side becomes `size`, the longer int(size * long / short).
void resizeShorter(int64_t H, int64_t W, int64_t size, int64_t& RH, int64_t& RW);

// CenterCrop's top (or left) offset of `crop` in `size`: int(round((size - crop) / 2)), as torchvision.
int64_t centerOffset(int64_t size, int64_t crop);

}  // namespace residual::image
