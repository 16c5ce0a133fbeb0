// Crop geometry (see crop.h).
#include "image/crop.h"

#include <algorithm>
#include <cmath>

#include "image/splitmix.h"

namespace residual::image {

Box rrcBox(int64_t H, int64_t W, const RrcParams& p, uint64_t& r) {
  const double area = double(H) * double(W);
  const double lr0 = std::log(p.ratioLo), lr1 = std::log(p.ratioHi);
  for (int attempt = 0; attempt < 10; attempt++) {
    double target = area * (p.scaleLo + unit(r) * (p.scaleHi - p.scaleLo));
    double ar = std::exp(lr0 + unit(r) * (lr1 - lr0));
    int64_t w = pyRound(std::sqrt(target * ar));
    int64_t h = pyRound(std::sqrt(target / ar));
    if (0 < w && w <= W && 0 < h && h <= H) {
      int64_t i = std::min<int64_t>(H - h, int64_t(unit(r) * double(H - h + 1)));
      int64_t j = std::min<int64_t>(W - w, int64_t(unit(r) * double(W - w + 1)));
      return {i, j, h, w};
    }
  }
  const double inRatio = double(W) / double(H);
  int64_t w, h;
  if (inRatio < std::min(p.ratioLo, p.ratioHi)) {
    w = W;
    h = pyRound(double(w) / std::min(p.ratioLo, p.ratioHi));
  } else if (inRatio > std::max(p.ratioLo, p.ratioHi)) {
    h = H;
    w = pyRound(double(h) * std::max(p.ratioLo, p.ratioHi));
  } else {
    w = W;
    h = H;
  }
  return {(H - h) / 2, (W - w) / 2, h, w};
}

void resizeShorter(int64_t H, int64_t W, int64_t size, int64_t& RH, int64_t& RW) {
  if (H <= W) {
    RH = size;
    RW = int64_t(double(size) * double(W) / double(H));
  } else {
    RW = size;
    RH = int64_t(double(size) * double(H) / double(W));
  }
}

int64_t centerOffset(int64_t size, int64_t crop) { return pyRound(double(size - crop) / 2.0); }

}  // namespace residual::image
