// splitmix64: the one small, well-distributed hash both loaders use for per-sample random decisions
// (crop offsets, flips, RandomResizedCrop boxes) and to derive their per-epoch seeds. A sample's
// stream is a function of (seed, epoch, position) only, so results do not depend on thread timing.
#pragma once
#include <cmath>
#include <cstdint>

namespace residual {

inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The next uniform double in [0, 1) of the stream `r` (53 random bits).
inline double unit(uint64_t& r) {
  r = mix(r);
  return double(r >> 11) * (1.0 / 9007199254740992.0);
}

// Python's round(): half to even (the default floating-point rounding mode).
inline int64_t pyRound(double v) { return int64_t(std::nearbyint(v)); }

}  // namespace residual
