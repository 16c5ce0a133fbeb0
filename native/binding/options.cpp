// Option-object readers (see options.h).
#include "options.h"

#include <cmath>

namespace residual {

namespace {

std::string opt(const char* key) { return std::string("option '") + key + "'"; }

std::string rangeText(int64_t lo, int64_t hi) {
  if (hi >= Options::kMaxSafe) return "at least " + std::to_string(lo);
  return "in " + std::to_string(lo) + ".." + std::to_string(hi);
}

int64_t checkedInt(const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) throw ArgError(what + " must be an integer, got " + describe(v));
  int64_t x = exactInt(v.As<Napi::Number>().DoubleValue(), what);
  if (x < lo || x > hi) throw RangeArgError(what + " must be " + rangeText(lo, hi) + ", got " + std::to_string(x));
  return x;
}

double checkedNumber(double x, const std::string& what) {
  if (!std::isfinite(x)) throw RangeArgError(what + " must be a finite number, got " + numText(x));
  return x;
}

}  // namespace

Options::Options(const Napi::Value& v, const char* what, bool optional) {
  if (optional && (v.IsUndefined() || v.IsNull())) {
    empty_ = true;
    return;
  }
  if (!v.IsObject() || v.IsArray()) throw ArgError(std::string("argument '") + what + "' must be an object, got " + describe(v));
  o_ = v.As<Napi::Object>();
}

Napi::Value Options::get(const char* key) const { return empty_ ? Napi::Value() : o_.Get(key); }

bool Options::has(const char* key) const {
  if (empty_) return false;
  Napi::Value v = o_.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

bool Options::flag(const char* key, bool dflt) const {
  if (!has(key)) return dflt;
  Napi::Value v = get(key);
  if (!v.IsBoolean()) throw ArgError(opt(key) + " must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

int64_t Options::integer(const char* key, int64_t dflt, int64_t lo, int64_t hi) const {
  if (!has(key)) return dflt;
  return checkedInt(get(key), opt(key), lo, hi);
}

double Options::number(const char* key, double dflt, double lo, double hi, const char* what) const {
  if (!has(key)) return dflt;
  Napi::Value v = get(key);
  if (!v.IsNumber()) throw ArgError(opt(key) + " must be " + what + ", got " + describe(v));
  double x = checkedNumber(v.As<Napi::Number>().DoubleValue(), opt(key));
  if (!(x >= lo && x <= hi))
    throw RangeArgError(opt(key) + " must be " + what + " in [" + numText(lo) + ", " + numText(hi) + "], got " + numText(x));
  return x;
}

std::string Options::choice(const char* key, const char* dflt, std::initializer_list<const char*> allowed) const {
  std::string want;
  size_t k = 0;
  for (const char* a : allowed) {
    want += (k == 0 ? "" : k + 1 == allowed.size() ? " or " : ", ") + std::string("'") + a + "'";
    k++;
  }
  if (!has(key)) return dflt;
  Napi::Value v = get(key);
  if (!v.IsString()) throw ArgError(opt(key) + " must be " + want + ", got " + describe(v));
  std::string s = v.As<Napi::String>().Utf8Value();
  for (const char* a : allowed)
    if (s == a) return s;
  throw ArgError(opt(key) + " must be " + want + ", got '" + s + "'");
}

std::vector<double> Options::numbers(const char* key) const {
  std::vector<double> out;
  if (!has(key)) return out;
  Napi::Value v = get(key);
  const std::string what = opt(key);
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_int32_array) {
      auto a = v.As<Napi::Int32Array>();
      for (size_t i = 0; i < a.ElementLength(); i++) out.push_back(a[i]);
      return out;
    }
    if (ta.TypedArrayType() == napi_float64_array) {
      auto a = v.As<Napi::Float64Array>();
      for (size_t i = 0; i < a.ElementLength(); i++) out.push_back(checkedNumber(a[i], what + " element " + std::to_string(i)));
      return out;
    }
  }
  if (!v.IsArray()) throw ArgError(what + " must be an array of numbers, got " + describe(v));
  auto arr = v.As<Napi::Array>();
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsNumber()) throw ArgError(what + " element " + std::to_string(i) + " must be a number, got " + describe(e));
    out.push_back(checkedNumber(e.As<Napi::Number>().DoubleValue(), what + " element " + std::to_string(i)));
  }
  return out;
}

std::vector<int64_t> Options::integers(const char* key, int64_t lo, int64_t hi) const {
  std::vector<int64_t> out;
  std::vector<double> v = numbers(key);
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    const std::string what = opt(key) + " element " + std::to_string(i);
    int64_t x = exactInt(v[i], what);
    if (x < lo || x > hi) throw RangeArgError(what + " must be " + rangeText(lo, hi) + ", got " + std::to_string(x));
    out.push_back(x);
  }
  return out;
}

std::vector<std::string> Options::strings(const char* key) const {
  std::vector<std::string> out;
  if (!has(key)) return out;
  Napi::Value v = get(key);
  if (!v.IsArray()) throw ArgError(opt(key) + " must be an array of strings, got " + describe(v));
  auto arr = v.As<Napi::Array>();
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsString()) throw ArgError(opt(key) + " element " + std::to_string(i) + " must be a string, got " + describe(e));
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}

at::Device Options::device(const char* key, const at::Device& dflt) const {
  if (!has(key)) return dflt;
  Napi::Value v = get(key);
  if (!v.IsString()) throw ArgError(opt(key) + " must be a device string ('cpu', 'cuda' or 'cuda:N'), got " + describe(v));
  try {
    return parseDevice(v.As<Napi::String>().Utf8Value());
  } catch (const KindError& e) {
    throw KindError(ErrKind::Device, opt(key) + ": " + e.what());
  }
}

image::Limits readLimits(const Options& o) {
  image::Limits l;
  l.maxPixels = o.integer("maxPixels", l.maxPixels, 1, int64_t(1) << 40);
  l.maxFileBytes = o.integer("maxFileBytes", l.maxFileBytes, 1, int64_t(1) << 40);
  return l;
}

}  // namespace residual
