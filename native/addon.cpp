// Module init, tensor handles and memory accounting, argument readers, error conversion, autograd,
// devices and RNG. Ops live in ops.cpp (one line each), optimizers in optim.cpp, the data pipeline in
// data.cpp. (PyTorch checkpoints are read in TypeScript: lib/io/torch.ts.)
#include "residual.h"

#if defined(RESIDUAL_CUDA)
// Only c10/cuda and the CUDA runtime: ATen/cuda headers pull in cuBLAS/cuSPARSE headers, which a
// compile-only CUDA toolkit may lack.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Version.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <chrono>
#include <limits>
#include <mutex>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sstream>

namespace residual {

EnvData* envData(Napi::Env env) { return env.GetInstanceData<EnvData>(); }

void drainPending(Napi::Env env, EnvData* d) {
  if (!d->hasPending.load(std::memory_order_acquire)) return;
  std::vector<napi_ref> refs;
  {
    std::lock_guard<std::mutex> lk(d->pendingMu);
    refs.swap(d->pendingUnref);
    d->hasPending.store(false, std::memory_order_release);
  }
  for (auto r : refs) napi_delete_reference(env, r);
}

// ---- memory accounting -------------------------------------------------------------------------

static int deviceSlot(const at::Device& dev) {
  if (dev.is_cuda()) return 1 + std::max<int>(0, std::min<int>(15, dev.index()));
  return 0;
}

// Tells V8 about CPU memory held by tensors (so GC pressure reflects it), in steps of 1 MB.
static void reportBytes(napi_env env, EnvData* d, int64_t delta) {
  d->unreportedBytes += delta;
  if (d->unreportedBytes > (1 << 20) || d->unreportedBytes < -(1 << 20)) {
    int64_t ignored;
    napi_adjust_external_memory(env, d->unreportedBytes, &ignored);
    d->unreportedBytes = 0;
  }
}

static void track(Napi::Env env, EnvData* d, Handle* h) {
  d->liveTensors++;
  if (!h->t.has_storage()) return;
  c10::StorageImpl* s = h->t.storage().unsafeGetStorageImpl();
  if (!s) return;
  h->storage = s;
  auto it = d->storages.find(s);
  if (it != d->storages.end()) {
    it->second.refs++;
    return;
  }
  int64_t bytes = int64_t(s->nbytes());
  int slot = deviceSlot(h->t.device());
  d->storages.emplace(s, EnvData::StorageRec{1, bytes, slot});
  d->bytesBySlot[slot] += bytes;
  if (slot == 0) reportBytes(env, d, bytes);
}

// Drops the handle's tensor and frees its slot for reuse under a new generation.
static void release(napi_env env, EnvData* d, Handle* h) {
  if (!h->alive) return;
  h->alive = false;
  d->liveTensors--;
  if (h->storage) {
    auto it = d->storages.find(h->storage);
    if (it != d->storages.end() && --it->second.refs == 0) {
      d->bytesBySlot[it->second.slot] -= it->second.bytes;
      if (it->second.slot == 0 && env) reportBytes(env, d, -it->second.bytes);
      d->storages.erase(it);
    }
    h->storage = nullptr;
  }
  h->t.reset();
  // A slot whose generations are used up is retired, never reused: a wrapped generation would
  // reissue an old id, and a stale Tensor (or its GC finalizer, which may run long after dispose)
  // would then address, or dispose, a live tensor. The free list is LIFO, so a hot slot goes
  // through its 2^20 - 1 generations in about a million allocations; retiring it costs one table entry.
  if (++h->gen >= (1u << kGenBits)) return;
  d->freeSlots.push_back(h->index);
}

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  EnvData* d = envData(env);
  drainPending(env, d);
  if (!t.defined()) return env.Null();
  uint32_t idx;
  if (!d->freeSlots.empty()) {
    idx = d->freeSlots.back();
    d->freeSlots.pop_back();
  } else {
    if (d->slots.size() >= kSlotMax) throw KindError(ErrKind::OOM, "too many live tensors (4,194,304): dispose() or use scope()");
    idx = uint32_t(d->slots.size());
    d->slots.emplace_back();
    d->slots.back().index = idx;
  }
  Handle* h = &d->slots[idx];
  h->t = std::move(t);
  h->alive = true;
  track(env, d, h);
  return Napi::Number::New(env, double(d->tagBits | (uint64_t(h->gen) << kIndexBits) | idx));
}

Napi::Value wrap(Napi::Env env, const std::vector<at::Tensor>& v) {
  auto a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(uint32_t(i), wrap(env, v[i]));
  return a;
}

Napi::Value wrap(Napi::Env env, const at::Scalar& s) {
  if (s.isBoolean()) return Napi::Boolean::New(env, s.toBool());
  if (s.isIntegral(false)) return Napi::Number::New(env, double(s.toLong()));
  return Napi::Number::New(env, s.toDouble());
}

// ---- errors --------------------------------------------------------------------------------------

static const char* const kErrCodes[int(ErrKind::Count)] = {
    "ERR_RESIDUAL", "ERR_RESIDUAL_SHAPE", "ERR_RESIDUAL_DTYPE", "ERR_RESIDUAL_DEVICE", "ERR_RESIDUAL_DISPOSED", "ERR_RESIDUAL_OOM",
};

static bool has(const std::string& s, const char* w) { return s.find(w) != std::string::npos; }

// The kind of a libtorch error, from its type and message. Order matters: memory, device, dtype, then
// shape (a dtype message may also mention sizes).
static ErrKind classify(const std::string& m, ErrKind fallback) {
  if (has(m, "out of memory") || has(m, "not enough memory") || has(m, "OutOfMemory") || has(m, "allocate memory")) return ErrKind::OOM;
  if (has(m, "same device") || has(m, "device") || has(m, "CUDA") || has(m, "cuda")) return ErrKind::Device;
  if (has(m, "scalar type") || has(m, "dtype") || has(m, "ScalarType") || has(m, "can't be cast") || has(m, "result type") ||
      has(m, "not implemented for '") || has(m, "floating point") || has(m, "integral type") || has(m, "Boolean") ||
      has(m, "is not supported for") || has(m, "Expected object of"))
    return ErrKind::Dtype;
  if (has(m, "size") || has(m, "shape") || has(m, "imension") || has(m, "must match") || has(m, "broadcast") || has(m, "dim") ||
      has(m, "out of range") || has(m, "channels") || has(m, "invalid for input") || has(m, "numel") || has(m, "stride") ||
      has(m, "elements") || has(m, "overflow"))
    return ErrKind::Shape;
  return fallback;
}

void throwJs(napi_env env, ErrKind kind, const char* jsType, const std::string& msg) noexcept {
  try {
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) != napi_ok || pending) return;  // terminating, or one is set
    napi_value text = nullptr, err = nullptr;
    if (napi_create_string_utf8(env, msg.data(), msg.size(), &text) != napi_ok) return;
    if (jsType && std::strcmp(jsType, "TypeError") == 0) {
      napi_create_type_error(env, nullptr, text, &err);
    } else if (jsType && std::strcmp(jsType, "RangeError") == 0) {
      napi_create_range_error(env, nullptr, text, &err);
    } else {
      EnvData* d = nullptr;
      napi_get_instance_data(env, reinterpret_cast<void**>(&d));
      napi_value ctor = nullptr;
      if (d && d->errorClasses[int(kind)] && napi_get_reference_value(env, d->errorClasses[int(kind)], &ctor) == napi_ok && ctor) {
        if (napi_new_instance(env, ctor, 1, &text, &err) != napi_ok) return;  // the constructor threw: that is pending
      } else {
        napi_value code = nullptr;
        const char* c = kErrCodes[int(kind)];
        if (napi_create_string_utf8(env, c, NAPI_AUTO_LENGTH, &code) != napi_ok) return;
        napi_create_error(env, code, text, &err);
      }
    }
    if (err) napi_throw(env, err);
  } catch (...) {
    // std::bad_alloc building the message: nothing more can be done without memory.
  }
}

void rethrow(napi_env env, const char* fn) noexcept {
  try {
    std::string prefix = std::string(fn) + ": ";
    try {
      throw;
    } catch (const Napi::Error& e) {
      // A node-addon-api call failed; usually a JS exception is already pending (a getter threw, or the
      // environment is terminating). Otherwise throw its error.
      bool pending = false;
      if (napi_is_exception_pending(env, &pending) != napi_ok || pending) return;
      throwJs(env, ErrKind::Generic, nullptr, prefix + (e.IsEmpty() ? std::string("a Node-API call failed") : e.Message()));
    } catch (const ArgError& e) {
      throwJs(env, ErrKind::Generic, "TypeError", prefix + e.what());
    } catch (const RangeArgError& e) {
      throwJs(env, ErrKind::Generic, "RangeError", prefix + e.what());
    } catch (const KindError& e) {
      throwJs(env, e.kind, nullptr, prefix + e.what());
    } catch (const c10::OutOfMemoryError& e) {
      std::string msg = e.what_without_backtrace();
      auto pos = msg.find("\nException raised from");
      if (pos != std::string::npos) msg = msg.substr(0, pos);
      throwJs(env, ErrKind::OOM, nullptr, prefix + msg);
    } catch (const c10::Error& e) {
      // what_without_backtrace(): libtorch's message without the C++ stack.
      std::string msg = e.what_without_backtrace();
      // Some messages carry an "Exception raised from ..." trailer: keep only the message.
      auto pos = msg.find("\nException raised from");
      if (pos != std::string::npos) msg = msg.substr(0, pos);
      ErrKind fallback = dynamic_cast<const c10::IndexError*>(&e) ? ErrKind::Shape : ErrKind::Generic;
      throwJs(env, classify(msg, fallback), nullptr, prefix + msg);
    } catch (const std::bad_alloc&) {
      throwJs(env, ErrKind::OOM, nullptr, prefix + "out of memory");
    } catch (const std::exception& e) {
      throwJs(env, ErrKind::Generic, nullptr, prefix + e.what());
    } catch (...) {
      throwJs(env, ErrKind::Generic, nullptr, prefix + "unknown native error");
    }
  } catch (...) {
  }
}

// ---- argument readers ----------------------------------------------------------------------------

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

Handle* asHandle(napi_env env, napi_value v, HandleState* why) {
  double id;
  if (napi_get_value_double(env, v, &id) != napi_ok || !(id >= 1.0 && id < 9007199254740992.0) || id != std::floor(id)) {
    if (why) *why = HandleState::NotTensor;
    return nullptr;
  }
  uint64_t u = uint64_t(id);
  EnvData* d = envData(Napi::Env(env));
  uint64_t tag = u >> (kGenBits + kIndexBits);
  uint32_t g = uint32_t((u >> kIndexBits) & ((uint64_t(1) << kGenBits) - 1));
  uint64_t idx = u & (kSlotMax - 1);
  if (tag != d->tag) {
    if (why) *why = tag != 0 && g != 0 ? HandleState::Foreign : HandleState::NotTensor;
    return nullptr;
  }
  if (g == 0 || idx >= d->slots.size()) {
    if (why) *why = HandleState::NotTensor;
    return nullptr;
  }
  Handle* h = &d->slots[size_t(idx)];
  if (h->alive && h->gen == g) return h;
  if (why) *why = HandleState::Stale;  // an earlier generation of this slot: disposed
  return nullptr;
}

void badHandle(HandleState why, const std::string& what, const std::string& got) {
  if (why == HandleState::Stale) throw KindError(ErrKind::Disposed, what + " is a disposed Tensor (used after dispose())");
  if (why == HandleState::Foreign)
    throw ArgError(what + " is not a Tensor of this thread: Tensors belong to the thread (main or worker_thread) that made them; "
                   "send the data instead (toTypedArray() and shape)");
  throw ArgError(what + " must be a Tensor, got " + got);
}

std::vector<at::Tensor> tensorsOf(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw ArgError(what + " must be an array of Tensors, got " + describe(v));
  auto arr = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value e = arr.Get(k);
    HandleState why = HandleState::NotTensor;  // asHandle sets it only on failure
    Handle* h = asHandle(env, e, &why);
    if (!h && why == HandleState::Stale) throw KindError(ErrKind::Disposed, what + " element " + std::to_string(k) + " is a disposed Tensor");
    if (!h && why == HandleState::Foreign) badHandle(why, what + " element " + std::to_string(k), "");
    if (!h) throw ArgError(what + " must hold only Tensors, element " + std::to_string(k) + " is " + describe(e));
    out.push_back(h->t);
  }
  return out;
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
    if (v.IsNull() || v.IsUndefined()) { out.emplace_back(std::nullopt); continue; }
    HandleState why;
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
static std::string numText(double v) {
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
    if (!v.IsNumber()) throw ArgError("argument '" + std::string(name) + "' must hold integers, element " + std::to_string(k) + " is " + describe(v));
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
    case int(at::kByte): case int(at::kChar): case int(at::kShort): case int(at::kInt): case int(at::kLong):
    case int(at::kHalf): case int(at::kFloat): case int(at::kDouble): case int(at::kBool): case int(at::kBFloat16):
      return at::ScalarType(code);
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

// ---- tensors from and to JS memory ---------------------------------------------------------------

// fromBuffer(arrayBufferOrView, byteOffset, shape, dtype, copy): zero-copy unless copy is true; the
// tensor keeps the ArrayBuffer alive (released on the JS thread when libtorch frees the memory).
DEFN(fromBuffer) {
  Napi::Env env = a.env();
  if (!a.has(0) || !(a.info[0].IsArrayBuffer() || a.info[0].IsTypedArray() || a.info[0].IsDataView()))
    a.fail(0, "data", "an ArrayBuffer or a typed array");
  Napi::ArrayBuffer ab;
  size_t base = 0, avail = 0;
  // A typed array over a SharedArrayBuffer: Node-API (Node 20) has no ArrayBuffer accessors for it, but
  // napi_get_typedarray_info gives its data pointer. A SharedArrayBuffer is never detached; the reference
  // below keeps it (and so its memory) alive while the tensor uses it.
  napi_value sabuf = nullptr;
  uint8_t* sabData = nullptr;
  if (a.info[0].IsTypedArray()) {
    napi_typedarray_type tt;
    size_t len = 0, off0 = 0;
    void* data = nullptr;
    napi_value buf = nullptr;
    bool isAb = false;
    if (napi_get_typedarray_info(env, a.info[0], &tt, &len, &data, &buf, &off0) == napi_ok && napi_is_arraybuffer(env, buf, &isAb) == napi_ok && !isAb) {
      sabuf = buf;
      sabData = static_cast<uint8_t*>(data);
      avail = a.info[0].As<Napi::TypedArray>().ByteLength();
    }
  }
  if (sabuf) {
    // (nothing more: sabData and avail are set)
  } else if (a.info[0].IsArrayBuffer()) {
    ab = a.info[0].As<Napi::ArrayBuffer>();
    avail = ab.ByteLength();
  } else if (a.info[0].IsTypedArray()) {
    auto ta = a.info[0].As<Napi::TypedArray>();
    ab = ta.ArrayBuffer();
    base = ta.ByteOffset();
    avail = ta.ByteLength();
  } else {
    auto dv = a.info[0].As<Napi::DataView>();
    ab = dv.ArrayBuffer();
    base = dv.ByteOffset();
    avail = dv.ByteLength();
  }
  bool detached = false;
  if (!sabuf && napi_is_detached_arraybuffer(env, ab, &detached) == napi_ok && detached)
    throw ArgError("argument 'data' is a detached ArrayBuffer (transferred or detached): it holds no data");
  int64_t off = a.I(1, "byteOffset");
  std::vector<int64_t> shape = a.IL(2, "shape");
  at::ScalarType dt = a.Dtype(3, "dtype");
  bool copy = a.B(4, "copy");
  int64_t numel = 1;
  for (auto s : shape) {
    if (s < 0) throw KindError(ErrKind::Shape, "argument 'shape' has a negative size");
    if (s > 0 && numel > (int64_t(1) << 50) / s) throw KindError(ErrKind::Shape, "argument 'shape' is too large");
    numel *= s;
  }
  size_t need = size_t(numel) * elementSize(dt);
  if (off < 0 || size_t(off) + need > avail)
    throw ArgError("argument 'data' holds " + std::to_string(avail) + " bytes, shape needs " + std::to_string(need) + " from offset " + std::to_string(off));
  uint8_t* ptr = (sabuf ? sabData : static_cast<uint8_t*>(ab.Data()) + base) + off;
  auto opts = at::TensorOptions().dtype(dt);
  if (copy || need == 0 || (reinterpret_cast<uintptr_t>(ptr) % elementSize(dt)) != 0) {
    at::Tensor t = at::empty(shape, opts);
    if (need) std::memcpy(t.data_ptr(), ptr, need);
    return wrap(env, t);
  }
  EnvData* d = envData(env);
  napi_ref ref;
  NAPI_THROW_IF_FAILED(env, napi_create_reference(env, sabuf ? sabuf : napi_value(ab), 1, &ref), Napi::Value());
  auto deleter = [d, ref](void*) {
    std::lock_guard<std::mutex> lk(d->pendingMu);
    d->pendingUnref.push_back(ref);
    d->hasPending.store(true, std::memory_order_release);
  };
  return wrap(env, at::from_blob(ptr, shape, deleter, opts));
}

// toBuffer(t): a copy of the tensor's elements (moved to CPU, made contiguous) in a new ArrayBuffer.
// The size is checked against the largest ArrayBuffer first, and the copy is made by libtorch's
// allocator (a failure is an OutOfMemoryError) and handed to JS as an external ArrayBuffer: V8's own
// ArrayBuffer allocation ends the process when it fails, this does not.
static void freeTensorBox(napi_env, void*, void* hint) { delete static_cast<at::Tensor*>(hint); }
void checkFitsArrayBuffer(Napi::Env env, const at::Tensor& t) {
  double bytes = double(t.numel()) * double(t.element_size());
  double maxBytes = envData(env)->maxArrayBufferBytes;
  if (bytes > maxBytes)
    throw KindError(ErrKind::OOM, "the tensor's " + std::to_string(int64_t(bytes)) + " bytes (" + c10::str(t.sizes()) + " " +
                                      std::string(c10::toString(t.scalar_type())) + ") exceed the largest ArrayBuffer (" +
                                      std::to_string(int64_t(maxBytes)) + " bytes)");
}
DEFN(toBuffer) {
  Napi::Env env = a.env();
  at::Tensor t = a.T(0, "tensor");
  checkFitsArrayBuffer(env, t);
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  if (c.numel() == 0) return Napi::ArrayBuffer::New(env, 0);
  if (c.has_storage() && t.has_storage() && c.storage().is_alias_of(t.storage())) c = c.clone();  // a copy, never a view
  auto* box = new at::Tensor(std::move(c));
  napi_value ab = nullptr;
  napi_status st = napi_create_external_arraybuffer(env, box->data_ptr(), box->nbytes(), freeTensorBox, box, &ab);
  if (st == napi_ok) return Napi::Value(env, ab);
  std::unique_ptr<at::Tensor> owned(box);
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) throw Napi::Error();  // already thrown
  if (st != napi_no_external_buffers_allowed) throw KindError(ErrKind::OOM, "could not create an ArrayBuffer of " + std::to_string(owned->nbytes()) + " bytes");
  // Runtimes that forbid external buffers: a V8 ArrayBuffer and a copy.
  auto out = Napi::ArrayBuffer::New(env, owned->nbytes());
  std::memcpy(out.Data(), owned->data_ptr(), owned->nbytes());
  return out;
}

// item(t) -> number | boolean. Decision: an int64 (or other integer) value outside
// +-Number.MAX_SAFE_INTEGER is a RangeError rather than a silently rounded number; itemBigInt(t)
// returns such values exactly, as a bigint.
DEFN(item) {
  at::Tensor t = a.T(0, "tensor");
  if (t.numel() != 1) throw KindError(ErrKind::Shape, "item() needs a tensor with one element, this one has " + std::to_string(t.numel()));
  at::Scalar s = t.item();
  if (s.isIntegral(false)) {
    int64_t v = s.toLong();
    if (v > int64_t(9007199254740991LL) || v < -int64_t(9007199254740991LL))
      throw RangeArgError("the value " + std::to_string(v) + " is outside Number.MAX_SAFE_INTEGER (2^53 - 1) and cannot be a number exactly: use itemBigInt()");
  }
  return wrap(a.env(), s);
}
DEFN(itemBigInt) {
  at::Tensor t = a.T(0, "tensor");
  if (t.numel() != 1) throw KindError(ErrKind::Shape, "itemBigInt() needs a tensor with one element, this one has " + std::to_string(t.numel()));
  if (!at::isIntegralType(t.scalar_type(), true)) throw KindError(ErrKind::Dtype, "itemBigInt() needs an integer or bool tensor, this one is " + std::string(c10::toString(t.scalar_type())));
  return Napi::BigInt::New(a.env(), t.item().toLong());
}

DEFN(shape) {
  at::Tensor t = a.T(0, "tensor");
  auto sizes = t.sizes();
  auto arr = Napi::Array::New(a.env(), sizes.size());
  for (size_t i = 0; i < sizes.size(); i++) arr.Set(uint32_t(i), Napi::Number::New(a.env(), double(sizes[i])));
  return arr;
}
DEFN(strides) {
  at::Tensor t = a.T(0, "tensor");
  auto st = t.strides();
  auto arr = Napi::Array::New(a.env(), st.size());
  for (size_t i = 0; i < st.size(); i++) arr.Set(uint32_t(i), Napi::Number::New(a.env(), double(st[i])));
  return arr;
}
DEFN(dtype) { return Napi::Number::New(a.env(), int(a.T(0, "tensor").scalar_type())); }
DEFN(device) { return Napi::String::New(a.env(), deviceString(a.T(0, "tensor").device())); }
DEFN(numel) { return Napi::Number::New(a.env(), double(a.T(0, "tensor").numel())); }
DEFN(dim) { return Napi::Number::New(a.env(), double(a.T(0, "tensor").dim())); }
DEFN(isContiguous) {
  at::Tensor t = a.T(0, "tensor");
  bool cl = a.has(1) && a.B(1, "channelsLast");
  return Napi::Boolean::New(a.env(), t.is_contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
}
DEFN(requiresGrad) { return Napi::Boolean::New(a.env(), a.T(0, "tensor").requires_grad()); }
DEFN(setRequiresGrad) {
  at::Tensor t = a.T(0, "tensor");
  t.set_requires_grad(a.B(1, "requiresGrad"));
  return a.env().Undefined();
}
DEFN(isLeaf) { return Napi::Boolean::New(a.env(), a.T(0, "tensor").is_leaf()); }
DEFN(gradFn) {
  at::Tensor t = a.T(0, "tensor");
  auto fn = t.grad_fn();
  if (!fn) return a.env().Null();
  return Napi::String::New(a.env(), fn->name());
}
// dispose(id): a stale id (already disposed) is a no-op, so the GC backstop may run after dispose().
DEFN(dispose) {
  if (!a.has(0)) return a.env().Undefined();
  HandleState why;
  Handle* h = asHandle(a.env(), a.info[0], &why);
  if (!h && why != HandleState::Stale) badHandle(why, "argument 'tensor'", describe(a.info[0]));
  if (h) release(a.env(), envData(a.env()), h);
  return a.env().Undefined();
}
DEFN(isAlive) {
  Handle* h = a.has(0) ? asHandle(a.env(), a.info[0]) : nullptr;
  return Napi::Boolean::New(a.env(), h != nullptr);
}
DEFN(sameStorage) {
  at::Tensor x = a.T(0, "a"), y = a.T(1, "b");
  return Napi::Boolean::New(a.env(), x.has_storage() && y.has_storage() && x.storage().is_alias_of(y.storage()));
}
DEFN(dataPtr) {
  return Napi::Number::New(a.env(), double(reinterpret_cast<uintptr_t>(a.T(0, "tensor").data_ptr())));
}

// ---- autograd -----------------------------------------------------------------------------------

DEFN(grad) { return wrap(a.env(), a.T(0, "tensor").grad()); }
DEFN(setGrad) {
  at::Tensor t = a.T(0, "tensor");
  if (!a.has(1)) {
    t.mutable_grad().reset();
  } else {
    at::Tensor g = a.T(1, "grad");
    if (g.sizes() != t.sizes()) throw ArgError("argument 'grad' has shape " + c10::str(g.sizes()) + ", the tensor has " + c10::str(t.sizes()));
    if (g.scalar_type() != t.scalar_type() || g.device() != t.device()) throw ArgError("argument 'grad' must match the tensor's dtype and device");
    t.mutable_grad() = g;
  }
  return a.env().Undefined();
}
DEFN(retainGrad) {
  a.T(0, "tensor").retain_grad();
  return a.env().Undefined();
}
DEFN(backward) {
  at::Tensor t = a.T(0, "tensor");
  std::optional<at::Tensor> g = a.OT(1, "gradient");
  bool retain = a.has(2) && a.B(2, "retainGraph");
  bool create = a.has(3) && a.B(3, "createGraph");
  if (!t.requires_grad()) throw ArgError("the tensor does not require grad and has no grad_fn: nothing to differentiate");
  if (!g && t.numel() != 1) throw ArgError("backward() without a gradient needs a scalar output, this one has shape " + c10::str(t.sizes()));
  t.backward(g ? *g : at::Tensor(), retain, create);
  return a.env().Undefined();
}
// autogradGrad(outputs, inputs, gradOutputs|null, retainGraph, createGraph, allowUnused)
DEFN(autogradGrad) {
  auto outs = a.TL(0, "outputs");
  auto ins = a.TL(1, "inputs");
  std::vector<at::Tensor> gouts;
  if (a.has(2)) gouts = a.TL(2, "gradOutputs");
  bool create = a.has(4) && a.B(4, "createGraph");
  std::optional<bool> retain;
  if (a.has(3)) retain = a.B(3, "retainGraph");
  bool allowUnused = a.has(5) && a.B(5, "allowUnused");
  auto res = torch::autograd::grad(outs, ins, gouts, retain, create, allowUnused);
  auto arr = Napi::Array::New(a.env(), res.size());
  for (size_t i = 0; i < res.size(); i++) arr.Set(uint32_t(i), wrap(a.env(), res[i]));
  return arr;
}
DEFN(setGradEnabled) {
  bool prev = at::GradMode::is_enabled();
  at::GradMode::set_enabled(a.B(0, "enabled"));
  return Napi::Boolean::New(a.env(), prev);
}
DEFN(isGradEnabled) { return Napi::Boolean::New(a.env(), at::GradMode::is_enabled()); }

// ---- autocast (mixed precision) -----------------------------------------------------------------
// setAutocast(deviceType 'cuda'|'cpu', enabled, dtype) -> previous enabled
DEFN(setAutocast) {
  std::string dt = a.Str(0, "deviceType");
  if (dt != "cuda" && dt != "cpu") throw KindError(ErrKind::Device, "argument 'deviceType' must be 'cpu' or 'cuda', got '" + dt + "'");
  at::DeviceType type = dt == "cuda" ? at::kCUDA : at::kCPU;
  bool prev = at::autocast::is_autocast_enabled(type);
  at::ScalarType prevDtype = at::autocast::get_autocast_dtype(type);
  bool en = a.B(1, "enabled");
  if (a.has(2)) at::autocast::set_autocast_dtype(type, a.Dtype(2, "dtype"));
  at::autocast::set_autocast_enabled(type, en);
  if (!en) at::autocast::clear_cache();
  auto out = Napi::Array::New(a.env(), 2);  // the previous state, to restore
  out.Set(uint32_t(0), Napi::Boolean::New(a.env(), prev));
  out.Set(uint32_t(1), Napi::Number::New(a.env(), int(prevDtype)));
  return out;
}

// ---- memory -------------------------------------------------------------------------------------

DEFN(memory) {
  Napi::Env env = a.env();
  EnvData* d = envData(env);
  drainPending(env, d);
  auto o = Napi::Object::New(env);
  o.Set("tensors", Napi::Number::New(env, double(d->liveTensors)));
  o.Set("storages", Napi::Number::New(env, double(d->storages.size())));
  auto bytes = Napi::Object::New(env);
  bytes.Set("cpu", Napi::Number::New(env, double(d->bytesBySlot[0])));
  for (int i = 1; i < 17; i++)
    if (d->bytesBySlot[i]) bytes.Set("cuda:" + std::to_string(i - 1), Napi::Number::New(env, double(d->bytesBySlot[i])));
  o.Set("bytes", bytes);
  return o;
}

// ---- devices, RNG, threads, build info -----------------------------------------------------------

DEFN(cudaIsAvailable) { return Napi::Boolean::New(a.env(), torch::cuda::is_available()); }
DEFN(cudaDeviceCount) { return Napi::Number::New(a.env(), double(torch::cuda::device_count())); }
DEFN(cudaSynchronize) {
  if (!torch::cuda::is_available()) throw std::runtime_error("CUDA is not available");
  if (a.has(0)) torch::cuda::synchronize(a.I(0, "device"));
  else torch::cuda::synchronize();
  return a.env().Undefined();
}
DEFN(cudaEmptyCache) {
#if defined(RESIDUAL_CUDA)
  if (torch::cuda::is_available()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  return a.env().Undefined();
}
DEFN(cudaMemoryStats) {
  Napi::Env env = a.env();
  auto o = Napi::Object::New(env);
#if defined(RESIDUAL_CUDA)
  if (torch::cuda::is_available()) {
    int dev = int(a.has(0) ? a.I(0, "device") : 0);
    auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(dev);
    using c10::CachingAllocator::StatType;
    auto agg = size_t(StatType::AGGREGATE);
    o.Set("allocatedBytes", Napi::Number::New(env, double(st.allocated_bytes[agg].current)));
    o.Set("peakAllocatedBytes", Napi::Number::New(env, double(st.allocated_bytes[agg].peak)));
    o.Set("reservedBytes", Napi::Number::New(env, double(st.reserved_bytes[agg].current)));
    o.Set("peakReservedBytes", Napi::Number::New(env, double(st.reserved_bytes[agg].peak)));
    o.Set("allocations", Napi::Number::New(env, double(st.allocation[agg].current)));
    o.Set("numAllocRetries", Napi::Number::New(env, double(st.num_alloc_retries)));
    size_t freeB = 0, totalB = 0;
    c10::cuda::CUDAGuard guard(dev);
    if (cudaMemGetInfo(&freeB, &totalB) == cudaSuccess) {
      o.Set("deviceFreeBytes", Napi::Number::New(env, double(freeB)));
      o.Set("deviceTotalBytes", Napi::Number::New(env, double(totalB)));
    }
  }
#endif
  return o;
}
DEFN(cudaDeviceInfo) {
  Napi::Env env = a.env();
  auto arr = Napi::Array::New(env);
#if defined(RESIDUAL_CUDA)
  if (torch::cuda::is_available()) {
    for (int i = 0; i < int(torch::cuda::device_count()); i++) {
      cudaDeviceProp prop;
      if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
      const cudaDeviceProp* p = &prop;
      auto o = Napi::Object::New(env);
      o.Set("name", Napi::String::New(env, p->name));
      o.Set("totalMemory", Napi::Number::New(env, double(p->totalGlobalMem)));
      o.Set("capability", Napi::String::New(env, std::to_string(p->major) + "." + std::to_string(p->minor)));
      o.Set("multiProcessors", Napi::Number::New(env, p->multiProcessorCount));
      arr.Set(uint32_t(i), o);
    }
  }
#endif
  return arr;
}
// manualSeed(seed): this environment's CPU generator, and (shared by all threads) libtorch's default
// CPU generator and every CUDA device's.
DEFN(manualSeed) {
  uint64_t seed = uint64_t(a.I(0, "seed"));
  at::Generator& g = envData(a.env())->gen;
  {
    std::lock_guard<std::mutex> lk(g.mutex());
    g.set_current_seed(seed);
  }
  at::manual_seed(seed);
  return a.env().Undefined();
}
// getRngState(device 'cpu'|'cuda:N') -> uint8 tensor; setRngState(device, state). 'cpu' is this
// environment's generator.
static at::Generator generatorOf(Napi::Env env, const at::Device& dev) {
  if (dev.is_cuda()) return at::globalContext().defaultGenerator(dev);
  return envData(env)->gen;
}
DEFN(getRngState) {
  at::Device dev = a.has(0) ? a.Dev(0, "device") : at::Device(at::kCPU);
  at::Generator g = generatorOf(a.env(), dev);
  std::lock_guard<std::mutex> lk(g.mutex());
  return wrap(a.env(), at::Tensor(g.get_state()));
}
DEFN(setRngState) {
  at::Device dev = a.Dev(0, "device");
  at::Tensor st = a.T(1, "state");
  at::Generator g = generatorOf(a.env(), dev);
  std::lock_guard<std::mutex> lk(g.mutex());
  g.set_state(st);
  return a.env().Undefined();
}
// The most intra-op threads allowed: beyond some thousands, the OpenMP runtime fails to start its
// threads and exits the process.
static int64_t maxThreads() {
  int64_t hc = int64_t(std::thread::hardware_concurrency());
  return std::min<int64_t>(1024, std::max<int64_t>(64, 4 * hc));
}
DEFN(setNumThreads) {
  int64_t n = a.I(0, "threads"), mx = maxThreads();
  if (n < 1 || n > mx) throw RangeArgError("argument 'threads' must be between 1 and " + std::to_string(mx) + ", got " + std::to_string(n));
  at::set_num_threads(int(n));
  return a.env().Undefined();
}
DEFN(maxNumThreads) { return Napi::Number::New(a.env(), double(maxThreads())); }

// CPU memory caching (setCpuMemoryCaching in lib/tensor/memory.ts). libtorch's CPU allocator is
// posix_memalign/free, i.e. glibc malloc. By default glibc hands the free top of its heap back to the
// kernel (trim) and serves large blocks with fresh mmaps, so a training step that frees its
// activations and allocates them again next step faults them in again: page faults plus zeroing,
// 3-25% of a CPU ResNet step. With caching on, freed memory stays mapped for reuse: the trim
// threshold is raised out of reach and blocks up to 32 MiB (the most glibc accepts on 64-bit) come
// from the heap. Resident memory then stays at the step's peak instead of shrinking between steps; it
// does not grow step after step (the same sizes are reused). Turning it off returns the free memory
// (malloc_trim) and sets the thresholds where glibc's adaptive ones settle after large blocks (mmap
// 32 MiB, trim twice that): once set, glibc keeps them fixed, and its 128 KiB defaults as fixed values
// would mmap (and fault in) every block over 128 KiB, ten times the faults of never having cached.
// Process-wide; the tensor counters (memory()) are not affected. Not glibc (musl, macOS): a no-op.
static std::mutex cpuCachingMu;
static bool cpuCachingOn = false;
DEFN(setCpuMemoryCaching) {
  bool on = a.B(0, "enabled");
  std::lock_guard<std::mutex> lk(cpuCachingMu);
  bool prev = cpuCachingOn;
#if defined(__GLIBC__)
  if (on && !prev) {
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  } else if (!on && prev) {
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    malloc_trim(0);
  }
  cpuCachingOn = on;
#endif
  return Napi::Boolean::New(a.env(), prev);
}
DEFN(getCpuMemoryCaching) {
  std::lock_guard<std::mutex> lk(cpuCachingMu);
  return Napi::Boolean::New(a.env(), cpuCachingOn);
}
// configure({errorClasses: {shape, dtype, device, disposed, oom, generic}, maxArrayBufferBytes}):
// called once per environment by lib/addon/binding.ts.
DEFN(configure) {
  if (!a.has(0) || !a.info[0].IsObject()) a.fail(0, "options", "an object");
  Napi::Env env = a.env();
  EnvData* d = envData(env);
  auto o = a.info[0].As<Napi::Object>();
  Napi::Value classes = o.Get("errorClasses");
  if (classes.IsObject()) {
    static const char* const keys[int(ErrKind::Count)] = {"generic", "shape", "dtype", "device", "disposed", "oom"};
    auto c = classes.As<Napi::Object>();
    for (int k = 0; k < int(ErrKind::Count); k++) {
      Napi::Value f = c.Get(keys[k]);
      if (f.IsUndefined()) continue;
      if (!f.IsFunction()) throw ArgError(std::string("errorClasses.") + keys[k] + " must be a constructor, got " + describe(f));
      napi_ref ref;
      NAPI_THROW_IF_FAILED(env, napi_create_reference(env, f, 1, &ref), Napi::Value());
      if (d->errorClasses[k]) napi_delete_reference(env, d->errorClasses[k]);
      d->errorClasses[k] = ref;
    }
  }
  Napi::Value mx = o.Get("maxArrayBufferBytes");
  if (mx.IsNumber()) {
    double v = mx.As<Napi::Number>().DoubleValue();
    if (!(v >= 0)) throw RangeArgError("maxArrayBufferBytes must be a non-negative number");
    d->maxArrayBufferBytes = v;
  }
  return env.Undefined();
}
DEFN(getNumThreads) { return Napi::Number::New(a.env(), at::get_num_threads()); }
bool distHasGloo();  // native/dist.cpp

DEFN(buildInfo) {
  Napi::Env env = a.env();
  auto o = Napi::Object::New(env);
  o.Set("libtorch", Napi::String::New(env, TORCH_VERSION));
  o.Set("variant", Napi::String::New(env, RESIDUAL_VARIANT));
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  o.Set("cudaBuilt", Napi::Boolean::New(env, at::hasCUDA()));
  o.Set("cudnnAvailable", Napi::Boolean::New(env, at::globalContext().hasCuDNN()));
  o.Set("mkldnn", Napi::Boolean::New(env, at::hasMKLDNN()));
  o.Set("config", Napi::String::New(env, at::show_config()));
  o.Set("threads", Napi::Number::New(env, at::get_num_threads()));
  o.Set("gloo", Napi::Boolean::New(env, distHasGloo()));
#if defined(RESIDUAL_CUDA)
  if (torch::cuda::is_available()) {
    o.Set("cudnnVersion", Napi::Number::New(env, double(at::detail::getCUDAHooks().versionCuDNN())));
    int rt = 0;
    if (cudaRuntimeGetVersion(&rt) == cudaSuccess) o.Set("cudaRuntimeVersion", Napi::Number::New(env, double(rt)));
  }
#endif
  return o;
}

static const FnEntry kCore[] = {
    ENTRY(fromBuffer),           // (data: ArrayBuffer | ArrayBufferView, byteOffset: number, shape: IntList, dtype: number, copy: boolean) => Handle
    ENTRY(toBuffer),             // (tensor: Handle) => ArrayBuffer
    ENTRY(item),                 // (tensor: Handle) => number | boolean
    ENTRY(shape),                // (tensor: Handle) => number[]
    ENTRY(strides),              // (tensor: Handle) => number[]
    ENTRY(dtype),                // (tensor: Handle) => number
    ENTRY(device),               // (tensor: Handle) => Device
    ENTRY(numel),                // (tensor: Handle) => number
    ENTRY(dim),                  // (tensor: Handle) => number
    ENTRY(isContiguous),         // (tensor: Handle, channelsLast?: boolean | null) => boolean
    ENTRY(requiresGrad),         // (tensor: Handle) => boolean
    ENTRY(setRequiresGrad),      // (tensor: Handle, requiresGrad: boolean) => void
    ENTRY(isLeaf),               // (tensor: Handle) => boolean
    ENTRY(gradFn),               // (tensor: Handle) => string | null
    ENTRY(dispose),              // (tensor?: Handle | null) => void
    ENTRY(isAlive),              // (tensor?: Handle | null) => boolean
    ENTRY(sameStorage),          // (a: Handle, b: Handle) => boolean
    ENTRY(dataPtr),              // (tensor: Handle) => number
    ENTRY(grad),                 // (tensor: Handle) => Handle | null
    ENTRY(setGrad),              // (tensor: Handle, grad?: Handle | null) => void
    ENTRY(retainGrad),           // (tensor: Handle) => void
    ENTRY(backward),             // (tensor: Handle, gradient?: Handle | null, retainGraph?: boolean | null, createGraph?: boolean | null) => void
    ENTRY(autogradGrad),         // (outputs: readonly Handle[], inputs: readonly Handle[], gradOutputs?: readonly Handle[] | null, retainGraph?: boolean | null, createGraph?: boolean | null, allowUnused?: boolean | null) => (Handle | null)[]
    ENTRY(setGradEnabled),       // (enabled: boolean) => boolean
    ENTRY(isGradEnabled),        // () => boolean
    ENTRY(setAutocast),          // (deviceType: string, enabled: boolean, dtype?: number | null) => [enabled: boolean, dtype: number]
    ENTRY(memory),               // () => MemoryInfo
    ENTRY(cudaIsAvailable),      // () => boolean
    ENTRY(cudaDeviceCount),      // () => number
    ENTRY(cudaSynchronize),      // (device?: number | null) => void
    ENTRY(cudaEmptyCache),       // () => void
    ENTRY(cudaMemoryStats),      // (device?: number | null) => Partial<CudaMemoryStats>
    ENTRY(cudaDeviceInfo),       // () => CudaDeviceInfo[]
    ENTRY(manualSeed),           // (seed: number) => void
    ENTRY(getRngState),          // (device?: string | null) => Handle
    ENTRY(setRngState),          // (device: string, state: Handle) => void
    ENTRY(setNumThreads),        // (threads: number) => void
    ENTRY(getNumThreads),        // () => number
    ENTRY(buildInfo),            // () => BuildInfo
    ENTRY(itemBigInt),           // (tensor: Handle) => bigint
    ENTRY(maxNumThreads),        // () => number
    ENTRY(configure),            // (options: ConfigureOptions) => void
    ENTRY(setCpuMemoryCaching),  // (enabled: boolean) => boolean
    ENTRY(getCpuMemoryCaching),  // () => boolean
};

// Environment tags in use (see Handle): each live environment has its own.
static std::mutex tagsMu;
static std::set<uint32_t> tagsInUse;

static uint32_t takeTag() {
  std::random_device rd;
  std::mt19937 rng((uint64_t(rd()) << 1) ^ uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::lock_guard<std::mutex> lk(tagsMu);
  uint32_t tag = 1;
  for (int tries = 0; tries < 64; tries++) {
    tag = 1 + rng() % ((1u << kTagBits) - 1);
    if (!tagsInUse.count(tag)) break;
  }
  tagsInUse.insert(tag);
  return tag;
}

// At environment teardown (a worker exiting) every tensor still referenced is released. The EnvData
// itself is deliberately leaked (a few bytes): a zero-copy tensor held elsewhere may still queue its
// ArrayBuffer release into it.
static void keepEnvData(Napi::Env env, EnvData* d) {
  for (auto& h : d->slots) {
    h.t.reset();
    h.alive = false;
  }
  for (auto& r : d->errorClasses) {
    if (r) napi_delete_reference(env, r);
    r = nullptr;
  }
  std::lock_guard<std::mutex> lk(tagsMu);
  tagsInUse.erase(d->tag);
  d->tag = 0;  // nothing matches any more
  d->tagBits = 0;
}

// The ScalarType codes of the supported dtypes, so the TS layer repeats no magic numbers.
static Napi::Object dtypeCodes(Napi::Env env) {
  auto o = Napi::Object::New(env);
  const std::pair<const char*, at::ScalarType> codes[] = {
      {"uint8", at::kByte}, {"int8", at::kChar}, {"int16", at::kShort}, {"int32", at::kInt}, {"int64", at::kLong},
      {"float16", at::kHalf}, {"float32", at::kFloat}, {"float64", at::kDouble}, {"bool", at::kBool}, {"bfloat16", at::kBFloat16},
  };
  for (auto& [name, st] : codes) o.Set(name, Napi::Number::New(env, int(st)));
  return o;
}

// Module init never lets a C++ exception out: a worker_thread terminated while it loads the library
// makes every N-API call fail, and an exception escaping here would abort the whole process.
static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  try {
    // Instance data per environment; deliberately leaked at env teardown (a few bytes per worker)
    // because GC finalizers of tensors may still run after it and reference it.
    auto* d = new EnvData();
    d->gen = at::make_generator<at::CPUGeneratorImpl>(c10::default_rng_seed_val);
    d->tag = takeTag();
    d->tagBits = uint64_t(d->tag) << (kGenBits + kIndexBits);
    if (napi_set_instance_data(env, d, [](napi_env e, void* p, void*) { keepEnvData(Napi::Env(e), static_cast<EnvData*>(p)); }, nullptr) != napi_ok) {
      std::lock_guard<std::mutex> lk(tagsMu);
      tagsInUse.erase(d->tag);
      return exports;
    }
    registerAll(env, exports, std::begin(kCore), std::end(kCore));
    initOps(env, exports);
    initOptim(env, exports);
    initData(env, exports);
    initImageIO(env, exports);
    initDist(env, exports);
    exports.Set("dtypeCodes", dtypeCodes(env));  // Readonly<Record<string, number>>
  } catch (const std::exception& e) {
    // The environment is going away (then a JS exception is pending and nothing more is thrown), or
    // something else failed: a JS error says so. Nothing is thrown through Node as a C++ exception.
    throwJs(env, ErrKind::Generic, nullptr, std::string("residual: the native addon failed to initialise: ") + e.what());
  } catch (...) {
    throwJs(env, ErrKind::Generic, nullptr, "residual: the native addon failed to initialise");
  }
  return exports;
}

}  // namespace residual

static Napi::Object InitResidual(Napi::Env env, Napi::Object exports) { return residual::Init(env, exports); }
NODE_API_MODULE(residual, InitResidual)
