// Argument readers: each JS value read as the C++ type an op needs, or a TypeError/RangeError naming
// the function, the argument and what was wrong (Args in residual.h); device strings; registration.
#include "residual.h"

#include <sstream>

namespace residual {

std::string describe(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    case napi_bigint: return "bigint";
    case napi_external: return "external";
    case napi_object: return v.IsArray() ? "array" : "object";
    default: return "value";
  }
}

void Args::fail(size_t i, const char* name, const std::string& want) const {
  std::string got = i < info.Length() ? describe(info[i]) : "nothing";
  throw ArgError("argument '" + std::string(name) + "' must be " + want + ", got " + got);
}

Handle* Args::H(size_t i, const char* name) const {
  HandleState why = HandleState::NotTensor;
  Handle* h = i < info.Length() ? asHandle(info.Env(), info[i], &why) : nullptr;
  if (!h) badHandle(why, "argument '" + std::string(name) + "'", i < info.Length() ? describe(info[i]) : "nothing");
  return h;
}

std::optional<at::Tensor> Args::OT(size_t i, const char* name) const {
  if (!has(i)) return std::nullopt;
  return T(i, name);
}

at::Tensor Args::TOS(size_t i, const char* name) const {
  if (i < info.Length() && info[i].IsArray()) {
    Napi::Value v = info[i].As<Napi::Array>().Get(uint32_t(0));
    if (!v.IsNumber() && !v.IsBoolean()) fail(i, name, "a Tensor or a boxed scalar [number]");
    double x = v.IsBoolean() ? double(v.As<Napi::Boolean>().Value()) : v.As<Napi::Number>().DoubleValue();
    at::Scalar sc = v.IsBoolean() ? at::Scalar(v.As<Napi::Boolean>().Value())
                    : (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 9.007199254740992e15) ? at::Scalar(int64_t(x))
                                                                                                      : at::Scalar(x);
    at::Tensor t = c10::scalar_to_tensor(sc);
    t.unsafeGetTensorImpl()->set_wrapped_number(true);  // promotes like a Python scalar
    return t;
  }
  HandleState why = HandleState::NotTensor;
  Handle* h = i < info.Length() ? asHandle(info.Env(), info[i], &why) : nullptr;
  if (h) return h->t;
  if (why == HandleState::NotTensor) fail(i, name, "a Tensor or a number");
  badHandle(why, "argument '" + std::string(name) + "'", "");
}

std::vector<at::Tensor> Args::TL(size_t i, const char* name) const {
  if (i >= info.Length()) fail(i, name, "an array of Tensors");
  return tensorsOf(info.Env(), info[i], "argument '" + std::string(name) + "'");
}

std::vector<std::optional<at::Tensor>> Args::OTL(size_t i, const char* name) const {
  if (i >= info.Length() || !info[i].IsArray()) fail(i, name, "an array of Tensors or nulls");
  auto arr = info[i].As<Napi::Array>();
  std::vector<std::optional<at::Tensor>> out;
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (v.IsNull() || v.IsUndefined()) {
      out.emplace_back(std::nullopt);
      continue;
    }
    HandleState why = HandleState::NotTensor;
    Handle* h = asHandle(info.Env(), v, &why);
    if (!h && why != HandleState::NotTensor) badHandle(why, "argument '" + std::string(name) + "' element " + std::to_string(k), "");
    if (!h) throw ArgError("argument '" + std::string(name) + "' element " + std::to_string(k) + " must be a live Tensor or null");
    out.emplace_back(h->t);
  }
  return out;
}

at::Scalar Args::S(size_t i, const char* name) const {
  if (i < info.Length()) {
    if (info[i].IsNumber()) {
      double v = info[i].As<Napi::Number>().DoubleValue();
      if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.007199254740992e15) return at::Scalar(int64_t(v));
      return at::Scalar(v);
    }
    if (info[i].IsBoolean()) return at::Scalar(info[i].As<Napi::Boolean>().Value());
  }
  fail(i, name, "a number");
}

std::optional<at::Scalar> Args::OS(size_t i, const char* name) const {
  if (!has(i)) return std::nullopt;
  return S(i, name);
}

double Args::D(size_t i, const char* name) const {
  if (i >= info.Length() || !info[i].IsNumber()) fail(i, name, "a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

std::optional<double> Args::OD(size_t i, const char* name) const {
  if (!has(i)) return std::nullopt;
  return D(i, name);
}

// A JS number as an exact integer: NaN/Infinity and values beyond 2^53 - 1 (not exactly representable,
// so not what the caller wrote) are RangeErrors, fractions TypeErrors; `what` names the argument.
std::string numText(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}
int64_t exactInt(double v, const std::string& what) {
  if (!std::isfinite(v)) throw RangeArgError(what + " must be a finite integer, got " + numText(v));
  if (v != std::floor(v)) throw ArgError(what + " must be an integer, got " + numText(v));
  if (std::fabs(v) > 9007199254740991.0) throw RangeArgError(what + " must be a safe integer (|x| <= 2^53 - 1), got " + numText(v));
  return int64_t(v);
}

// The common case without building an error message (exactInt's `what` costs a string per call).
static inline bool isExactInt(double v) { return v == std::floor(v) && std::fabs(v) <= 9007199254740991.0; }

int64_t Args::I(size_t i, const char* name) const {
  if (i >= info.Length() || !info[i].IsNumber()) fail(i, name, "an integer");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (isExactInt(v)) return int64_t(v);
  return exactInt(v, "argument '" + std::string(name) + "'");
}

std::optional<int64_t> Args::OI(size_t i, const char* name) const {
  if (!has(i)) return std::nullopt;
  return I(i, name);
}

bool Args::B(size_t i, const char* name) const {
  if (i >= info.Length() || !info[i].IsBoolean()) fail(i, name, "a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

std::vector<int64_t> Args::IL(size_t i, const char* name) const {
  if (i < info.Length() && info[i].IsNumber()) return {I(i, name)};
  if (i >= info.Length() || !info[i].IsArray()) fail(i, name, "an integer or an array of integers");
  auto arr = info[i].As<Napi::Array>();
  std::vector<int64_t> out(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (!v.IsNumber())
      throw ArgError("argument '" + std::string(name) + "' must hold integers, element " + std::to_string(k) + " is " + describe(v));
    double x = v.As<Napi::Number>().DoubleValue();
    out[k] = isExactInt(x) ? int64_t(x) : exactInt(x, "argument '" + std::string(name) + "' element " + std::to_string(k));
  }
  return out;
}

Args::OptIL Args::OIL(size_t i, const char* name) const {
  if (!has(i)) return OptIL{};
  return OptIL{IL(i, name)};
}

std::string Args::Str(size_t i, const char* name) const {
  if (i >= info.Length() || !info[i].IsString()) fail(i, name, "a string");
  return info[i].As<Napi::String>().Utf8Value();
}

std::optional<std::string> Args::OStr(size_t i, const char* name) const {
  if (!has(i)) return std::nullopt;
  return Str(i, name);
}

at::ScalarType Args::Dtype(size_t i, const char* name) const {
  int64_t code = I(i, name);
  switch (code) {
    case int(at::kByte):
    case int(at::kChar):
    case int(at::kShort):
    case int(at::kInt):
    case int(at::kLong):
    case int(at::kHalf):
    case int(at::kFloat):
    case int(at::kDouble):
    case int(at::kBool):
    case int(at::kBFloat16): return at::ScalarType(code);
    default:
      throw KindError(ErrKind::Dtype, "argument '" + std::string(name) + "' is not a supported dtype code (" + std::to_string(code) + ")");
  }
}

std::optional<at::ScalarType> Args::ODtype(size_t i, const char* name) const {
  if (!has(i)) return std::nullopt;
  return Dtype(i, name);
}

at::Device parseDevice(const std::string& s) {
  if (s == "cpu") return at::Device(at::kCPU);
  if (s == "cuda") return at::Device(at::kCUDA, 0);
  if (s.rfind("cuda:", 0) == 0) {
    std::string n = s.substr(5);
    if (!n.empty() && n.size() < 3 && std::all_of(n.begin(), n.end(), ::isdigit)) return at::Device(at::kCUDA, int8_t(std::stoi(n)));
  }
  throw KindError(ErrKind::Device, "unknown device '" + s + "' (expected 'cpu', 'cuda' or 'cuda:N')");
}

std::string deviceString(const at::Device& d) {
  if (d.is_cpu()) return "cpu";
  if (d.is_cuda()) return "cuda:" + std::to_string(d.has_index() ? d.index() : 0);
  return d.str();
}

at::Device Args::Dev(size_t i, const char* name) const {
  std::string s = Str(i, name);
  try {
    return parseDevice(s);
  } catch (const KindError& e) {
    throw KindError(ErrKind::Device, "argument '" + std::string(name) + "': " + e.what());
  }
}

at::TensorOptions Args::Opts(size_t i) const {
  at::TensorOptions o;
  if (has(i)) o = o.dtype(Dtype(i, "dtype"));
  if (has(i + 1)) o = o.device(Dev(i + 1, "device"));
  return o;
}

void registerAll(Napi::Env env, Napi::Object exports, const FnEntry* b, const FnEntry* e) {
  for (const FnEntry* p = b; p != e; ++p) exports.Set(p->name, Napi::Function::New(env, p->fn, p->name));
}
}  // namespace residual
