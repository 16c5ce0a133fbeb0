// Antialiased bilinear resampling (see resample.h).
#include "image/resample.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace residual::image {

namespace {

// Weights of the outputs [begin, begin + count) of a resize of inSize samples to outSize.
struct Taps {
  int64_t maxTaps = 0;
  std::vector<int64_t> start, size;
  std::vector<float> w;  // count * maxTaps
};

Taps aaTaps(int64_t inSize, int64_t outSize, int64_t begin, int64_t count) {
  Taps t;
  const double scale = double(inSize) / double(outSize);
  const double support = scale >= 1.0 ? scale : 1.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  t.maxTaps = int64_t(std::ceil(support)) * 2 + 1;
  t.start.resize(size_t(count));
  t.size.resize(size_t(count));
  t.w.assign(size_t(count * t.maxTaps), 0.f);
  std::vector<double> tmp(size_t(t.maxTaps));
  for (int64_t k = 0; k < count; k++) {
    const int64_t i = begin + k;
    const double center = scale * (double(i) + 0.5);
    int64_t xmin = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    int64_t xsize = std::min<int64_t>(int64_t(center + support + 0.5), inSize) - xmin;
    xsize = std::max<int64_t>(0, std::min(xsize, t.maxTaps));
    double total = 0;
    for (int64_t j = 0; j < xsize; j++) {
      double x = std::abs((double(j + xmin) - center + 0.5) * invscale);
      double v = x < 1.0 ? 1.0 - x : 0.0;
      tmp[size_t(j)] = v;
      total += v;
    }
    for (int64_t j = 0; j < xsize; j++) t.w[size_t(k * t.maxTaps + j)] = float(total != 0 ? tmp[size_t(j)] / total : 0.0);
    t.start[size_t(k)] = xmin;
    t.size[size_t(k)] = xsize;
  }
  return t;
}

}  // namespace

void resizedCrop(const Image& im, const Box& box, int64_t RH, int64_t RW, int64_t oy, int64_t ox, int64_t OH, int64_t OW, bool flip,
                 const float* scale, const float* shift, float* dst) {
  const int64_t C = im.c;
  Taps tx = aaTaps(box.w, RW, ox, OW);
  Taps ty = aaTaps(box.h, RH, oy, OH);
  // rows of the crop the vertical pass needs
  int64_t r0 = ty.start[0], r1 = 0;
  for (int64_t k = 0; k < OH; k++) {
    r0 = std::min(r0, ty.start[size_t(k)]);
    r1 = std::max(r1, ty.start[size_t(k)] + ty.size[size_t(k)]);
  }
  const int64_t nr = std::max<int64_t>(0, r1 - r0);
  if (nr * OW * C * int64_t(sizeof(float)) > kMaxResampleBytes)
    throw ImageError("resizing a " + std::to_string(box.w) + "x" + std::to_string(box.h) + " region to " + std::to_string(OW) + "x" +
                     std::to_string(OH) + " needs " + std::to_string(nr * OW * C * int64_t(sizeof(float)) >> 20) +
                     " MiB of intermediate buffer, over the limit of " + std::to_string(kMaxResampleBytes >> 20) + " MiB");
  std::vector<float> tmp(size_t(nr * OW * C));
  for (int64_t r = 0; r < nr; r++) {
    const int64_t y = box.i + r0 + r;
    float* o = tmp.data() + r * OW * C;
    for (int64_t x = 0; x < OW; x++) {
      const uint8_t* s = im.at(y, box.j + tx.start[size_t(x)]);
      const float* w = tx.w.data() + x * tx.maxTaps;
      const int64_t n = tx.size[size_t(x)];
      if (C == 3) {
        float a = 0, b = 0, c = 0;
        for (int64_t t = 0; t < n; t++, s += 3) {
          a += w[t] * s[0];
          b += w[t] * s[1];
          c += w[t] * s[2];
        }
        o[3 * x] = a;
        o[3 * x + 1] = b;
        o[3 * x + 2] = c;
      } else {
        for (int64_t ch = 0; ch < C; ch++) {
          float a = 0;
          for (int64_t t = 0; t < n; t++) a += w[t] * s[t * C + ch];
          o[C * x + ch] = a;
        }
      }
    }
  }
  const int64_t plane = OH * OW;
  std::vector<float> acc(size_t(OW * C));
  for (int64_t y = 0; y < OH; y++) {
    std::fill(acc.begin(), acc.end(), 0.f);
    const float* w = ty.w.data() + y * ty.maxTaps;
    const int64_t n = ty.size[size_t(y)];
    const float* base = tmp.data() + (ty.start[size_t(y)] - r0) * OW * C;
    for (int64_t t = 0; t < n; t++) {
      const float* row = base + t * OW * C;
      const float wt = w[t];
      for (int64_t q = 0; q < OW * C; q++) acc[size_t(q)] += wt * row[q];
    }
    for (int64_t ch = 0; ch < C; ch++) {
      float* d = dst + ch * plane + y * OW;
      const float sc = scale[ch], sh = shift[ch];
      for (int64_t x = 0; x < OW; x++) {
        int64_t xo = flip ? OW - 1 - x : x;
        d[xo] = acc[size_t(x * C + ch)] * sc + sh;
      }
    }
  }
}

}  // namespace residual::image
