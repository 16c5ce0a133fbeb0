// libFuzzer target: the image decoders (libjpeg-turbo, libpng) and the streaming loader's whole
// per-image transform (image/transform.h: RandomResizedCrop / Resize + CenterCrop / resize, the
// antialiased resampler, flip, rounding), plus a plain decode to 1, 3 or 4 channels.
// Input: two control bytes, then the file. Built and run by scripts/ci/fuzz-native.sh.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "image/codec.h"
#include "image/transform.h"

using namespace residual::image;

static void check(bool ok) {
  if (!ok) __builtin_trap();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t c0 = data[0], c1 = data[1];
  data += 2;
  size -= 2;
  // Small limits keep each run fast; the checks are the same whatever the limits.
  Limits lim;
  lim.maxPixels = int64_t(1) << 22;
  lim.maxFileBytes = int64_t(1) << 22;

  // a plain decode (imageDecode)
  const int channels = (c0 & 3) == 0 ? 1 : (c0 & 3) == 1 ? 3 : 4;
  try {
    Image im;
    decodeImage(data, size, channels, lim, nullptr, im);
    check(im.c == channels && im.h > 0 && im.w > 0 && im.h <= kMaxSide && im.w <= kMaxSide);
    check(im.h * im.w <= lim.maxPixels && im.x0 == 0 && im.y0 == 0 && im.h == im.fullH && im.w == im.fullW);
    check(im.stride == im.w * im.c && int64_t(im.px.size()) >= im.stride * im.h);
    volatile uint8_t sink = 0;
    for (int64_t y = 0; y < im.h; y += 7) sink ^= im.at(y, im.w - 1)[im.c - 1];
  } catch (const ImageError&) {}

  // the loader's transform
  TransformSpec spec;
  spec.kind = Transform((c0 >> 2) % 3);
  spec.channels = (c0 & 0x20) ? 1 : 3;
  spec.flip = (c0 & 0x40) != 0;
  spec.outH = 1 + (c1 & 15);
  spec.outW = 1 + (c1 >> 4);
  spec.resize = std::max(spec.outH, spec.outW) + ((c0 >> 7) ? 7 : 0);
  spec.lim = lim;
  std::vector<uint8_t> out(size_t(spec.channels * spec.outH * spec.outW));
  try {
    Image im;
    transformImage(data, size, spec, uint64_t(c0) * 0x9e3779b97f4a7c15ULL + c1, out.data(), im);
  } catch (const ImageError&) {}
  return 0;
}
