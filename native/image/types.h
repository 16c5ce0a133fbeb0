// The image library's shared types: limits, a decoded image region, a crop box, and its error. This
// library (native/image/) holds the codecs, resampling, crop geometry and the tar reader; it includes
// no torch or Node headers, so it builds on its own (the fuzz harness, native/fuzz/) and outside the
// addon's torch precompiled header.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace residual::image {

// A bad, unreadable or over-limit file (or tar member): the message says what was wrong.
struct ImageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Limits {
  int64_t maxPixels = int64_t(1) << 26;     // 67 M pixels (8192 x 8192)
  int64_t maxFileBytes = int64_t(1) << 28;  // 256 MiB per file or tar member
};

// Longest side of an image we decode (JPEG's own limit; PNG held to it too): with the pixel cap,
// this bounds how thin an image can be, hence the resampler's intermediate buffers.
constexpr int64_t kMaxSide = 65535;
// Most bytes the resampler's intermediate (one pass's output) may take.
constexpr int64_t kMaxResampleBytes = int64_t(512) << 20;
// Largest class index (as lib/data/idx.ts's MAX_IDX_CLASSES - 1).
constexpr int64_t kMaxLabel = 65535;

// A decoded region of an image: rows [y0, y0 + h) and columns [x0, x0 + w) of a fullH x fullW
// image, c channels interleaved (HWC), `stride` bytes per row.
struct Image {
  int64_t fullH = 0, fullW = 0;
  int64_t y0 = 0, x0 = 0, h = 0, w = 0, c = 0, stride = 0;
  std::vector<uint8_t> px;
  const uint8_t* at(int64_t y, int64_t x) const { return px.data() + (y - y0) * stride + (x - x0) * c; }
};

struct Box {
  int64_t i = 0, j = 0, h = 0, w = 0;  // top, left, height, width (torchvision's order)
};

}  // namespace residual::image
