// The streaming loader's per-image transform (see transform.h).
#include "image/transform.h"

#include <string>
#include <vector>

#include "image/codec.h"
#include "image/resample.h"
#include "image/splitmix.h"

namespace residual::image {

void transformImage(const uint8_t* data, size_t n, const TransformSpec& spec, uint64_t r, uint8_t* dst, Image& im) {
  Box box;
  int64_t RH = spec.outH, RW = spec.outW, oy = 0, ox = 0;
  bool flip = false;
  RoiFn roi = [&](int64_t H, int64_t W) -> Box {
    if (spec.kind == Transform::Train) {
      box = rrcBox(H, W, spec.rrc, r);
      return box;
    }
    box = {0, 0, H, W};
    if (spec.kind == Transform::Eval) {
      resizeShorter(H, W, spec.resize, RH, RW);
      // CenterCrop, as torchvision (no padding: RH >= outH needed)
      oy = centerOffset(RH, spec.outH);
      ox = centerOffset(RW, spec.outW);
      if (oy < 0 || ox < 0) throw ImageError("resize " + std::to_string(spec.resize) + " is smaller than the crop");
    }
    return box;
  };
  decodeImage(data, n, spec.channels, spec.lim, &roi, im);
  if (spec.kind == Transform::Train && spec.flip) flip = unit(r) < 0.5;
  // resampled in float, then rounded (as PIL's resize, and torchvision's on uint8 images)
  thread_local std::vector<float> scratch, one, zero;
  const int64_t count = int64_t(spec.channels) * spec.outH * spec.outW;
  scratch.resize(size_t(count));
  one.assign(size_t(spec.channels), 1.f);
  zero.assign(size_t(spec.channels), 0.f);
  resizedCrop(im, box, RH, RW, oy, ox, spec.outH, spec.outW, flip, one.data(), zero.data(), scratch.data());
  for (int64_t k = 0; k < count; k++) {
    float v = scratch[size_t(k)];
    dst[k] = uint8_t(v <= 0.f ? 0 : v >= 255.f ? 255 : int(v + 0.5f));
  }
}

}  // namespace residual::image
