// Option objects ({batchSize: 64, shuffle: true, ...}) read into plain C++ values, as sharp's common.h
// reads its options: one reader per kind of value, one message shape ("option 'name' must be ...,
// got ..."), every number checked exactly (NaN and Infinity are refused everywhere; integers are
// integers, ranges are inclusive and stated). What a reader returns goes into a plain struct, and a
// native worker thread is handed that struct: it never touches a JS value.
#pragma once
#include "residual.h"

#include <initializer_list>

#include "image/types.h"

namespace residual {

class Options {
 public:
  // `v` must be an object (a TypeError naming `what` otherwise); undefined reads as {} when `optional`.
  explicit Options(const Napi::Value& v, const char* what = "options", bool optional = false);

  // Present: neither undefined nor null (an absent option takes its default).
  bool has(const char* key) const;
  // A boolean.
  bool flag(const char* key, bool dflt) const;
  // An exact integer in [lo, hi]: a TypeError for a fraction or a non-number, a RangeError for NaN,
  // Infinity, beyond 2^53 - 1, or outside the range.
  int64_t integer(const char* key, int64_t dflt, int64_t lo, int64_t hi) const;
  // A finite number in [lo, hi]; `what` (e.g. "a probability") describes it in the message.
  double number(const char* key, double dflt, double lo, double hi, const char* what = "a number") const;
  // One of `allowed` (strings).
  std::string choice(const char* key, const char* dflt, std::initializer_list<const char*> allowed) const;
  // An array (or Float64Array / Int32Array) of finite numbers; empty when absent.
  std::vector<double> numbers(const char* key) const;
  // An array of exact integers in [lo, hi]; empty when absent.
  std::vector<int64_t> integers(const char* key, int64_t lo, int64_t hi) const;
  // An array of strings; empty when absent.
  std::vector<std::string> strings(const char* key) const;
  // A device string ('cpu', 'cuda', 'cuda:N'), or `dflt` when absent.
  at::Device device(const char* key, const at::Device& dflt) const;

  // The largest exact integer a JS number holds (2^53 - 1): an integer option's "no upper bound".
  static constexpr int64_t kMaxSafe = 9007199254740991LL;

 private:
  Napi::Value get(const char* key) const;
  Napi::Object o_;
  bool empty_ = false;
};

// The image library's limits (maxPixels, maxFileBytes) from an option object.
image::Limits readLimits(const Options& o);

}  // namespace residual
