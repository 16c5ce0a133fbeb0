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
  if (++h->gen >= (1u << 30)) h->gen = 1;
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
    if (d->slots.size() >= size_t(kSlotSpan)) throw std::runtime_error("too many live tensors (4,194,304): dispose() or use scope()");
    idx = uint32_t(d->slots.size());
    d->slots.emplace_back();
    d->slots.back().index = idx;
  }
  Handle* h = &d->slots[idx];
  h->t = std::move(t);
  h->alive = true;
  track(env, d, h);
  return Napi::Number::New(env, double(h->gen) * kSlotSpan + double(idx));
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

Napi::Value rethrow(Napi::Env env, const char* fn) {
  std::string prefix = std::string(fn) + ": ";
  try {
    throw;
  } catch (const ArgError& e) {
    throw Napi::TypeError::New(env, prefix + e.what());
  } catch (const c10::Error& e) {
    // what_without_backtrace(): libtorch's message without the C++ stack.
    std::string msg = e.what_without_backtrace();
    // Some messages carry an "Exception raised from ..." trailer: keep only the message.
    auto pos = msg.find("\nException raised from");
    if (pos != std::string::npos) msg = msg.substr(0, pos);
    throw Napi::Error::New(env, prefix + msg);
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, prefix + "out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, prefix + e.what());
  } catch (...) {
    throw Napi::Error::New(env, prefix + "unknown native error");
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

Handle* asHandle(napi_env env, napi_value v, bool* stale) {
  double id;
  if (napi_get_value_double(env, v, &id) != napi_ok) return nullptr;  // not a number
  if (!(id >= kSlotSpan) || id != std::floor(id) || id > 9.0e15) return nullptr;
  double g = std::floor(id / kSlotSpan);
  double idx = id - g * kSlotSpan;
  EnvData* d = envData(Napi::Env(env));
  if (idx >= double(d->slots.size())) return nullptr;
  Handle* h = &d->slots[size_t(idx)];
  if (h->alive && double(h->gen) == g) return h;
  if (stale && double(h->gen) > g) *stale = true;  // an earlier generation of this slot: disposed
  return nullptr;
}

std::vector<at::Tensor> tensorsOf(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw ArgError(what + " must be an array of Tensors, got " + describe(v));
  auto arr = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value e = arr.Get(k);
    bool stale = false;
    Handle* h = asHandle(env, e, &stale);
    if (stale) throw ArgError(what + " element " + std::to_string(k) + " is a disposed Tensor");
    if (!h) throw ArgError(what + " must hold only Tensors, element " + std::to_string(k) + " is " + describe(e));
    out.push_back(h->t);
  }
  return out;
}

Handle* Args::H(size_t i, const char* name) const {
  bool stale = false;
  Handle* h = i < info.Length() ? asHandle(info.Env(), info[i], &stale) : nullptr;
  if (stale) throw ArgError("argument '" + std::string(name) + "' is a disposed Tensor (used after dispose())");
  if (!h) fail(i, name, "a Tensor");
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
  bool stale = false;
  if (i < info.Length() && asHandle(info.Env(), info[i], &stale) == nullptr && !stale) fail(i, name, "a Tensor or a number");
  return T(i, name);
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
    Handle* h = asHandle(info.Env(), v);
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

int64_t Args::I(size_t i, const char* name) const {
  if (i >= info.Length() || !info[i].IsNumber()) fail(i, name, "an integer");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v != std::floor(v)) fail(i, name, "an integer (got " + std::to_string(v) + ")");
  if (std::fabs(v) > 9.007199254740992e15) fail(i, name, "an integer within +-2^53");
  return int64_t(v);
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
    double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(x) || x != std::floor(x) || std::fabs(x) > 9.007199254740992e15)
      throw ArgError("argument '" + std::string(name) + "' must hold integers, element " + std::to_string(k) + " is " + (v.IsNumber() ? std::to_string(x) : describe(v)));
    out[k] = int64_t(x);
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
      throw ArgError("argument '" + std::string(name) + "' is not a supported dtype code (" + std::to_string(code) + ")");
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
  throw ArgError("unknown device '" + s + "' (expected 'cpu', 'cuda' or 'cuda:N')");
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
  } catch (const ArgError& e) {
    throw ArgError("argument '" + std::string(name) + "': " + e.what());
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
  if (a.info[0].IsArrayBuffer()) {
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
  int64_t off = a.I(1, "byteOffset");
  std::vector<int64_t> shape = a.IL(2, "shape");
  at::ScalarType dt = a.Dtype(3, "dtype");
  bool copy = a.B(4, "copy");
  int64_t numel = 1;
  for (auto s : shape) {
    if (s < 0) throw ArgError("argument 'shape' has a negative size");
    if (s > 0 && numel > (int64_t(1) << 50) / s) throw ArgError("argument 'shape' is too large");
    numel *= s;
  }
  size_t need = size_t(numel) * elementSize(dt);
  if (off < 0 || size_t(off) + need > avail)
    throw ArgError("argument 'data' holds " + std::to_string(avail) + " bytes, shape needs " + std::to_string(need) + " from offset " + std::to_string(off));
  uint8_t* ptr = static_cast<uint8_t*>(ab.Data()) + base + off;
  auto opts = at::TensorOptions().dtype(dt);
  if (copy || need == 0 || (reinterpret_cast<uintptr_t>(ptr) % elementSize(dt)) != 0) {
    at::Tensor t = at::empty(shape, opts);
    if (need) std::memcpy(t.data_ptr(), ptr, need);
    return wrap(env, t);
  }
  EnvData* d = envData(env);
  napi_ref ref;
  NAPI_THROW_IF_FAILED(env, napi_create_reference(env, ab, 1, &ref), Napi::Value());
  auto deleter = [d, ref](void*) {
    std::lock_guard<std::mutex> lk(d->pendingMu);
    d->pendingUnref.push_back(ref);
    d->hasPending.store(true, std::memory_order_release);
  };
  return wrap(env, at::from_blob(ptr, shape, deleter, opts));
}

// toBuffer(t): a copy of the tensor's elements (moved to CPU, made contiguous) in a new ArrayBuffer.
DEFN(toBuffer) {
  at::Tensor t = a.T(0, "tensor");
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  size_t n = c.nbytes();
  auto ab = Napi::ArrayBuffer::New(a.env(), n);
  if (n) std::memcpy(ab.Data(), c.data_ptr(), n);
  return ab;
}

DEFN(item) {
  at::Tensor t = a.T(0, "tensor");
  if (t.numel() != 1) throw ArgError("item() needs a tensor with one element, this one has " + std::to_string(t.numel()));
  return wrap(a.env(), t.item());
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
  bool stale = false;
  Handle* h = asHandle(a.env(), a.info[0], &stale);
  if (!h && !stale) a.fail(0, "tensor", "a Tensor");
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
DEFN(manualSeed) {
  uint64_t seed = uint64_t(a.I(0, "seed"));
  at::manual_seed(seed);  // CPU and every CUDA device
  return a.env().Undefined();
}
// getRngState(device 'cpu'|'cuda:N') -> uint8 tensor; setRngState(device, state)
DEFN(getRngState) {
  at::Device dev = a.has(0) ? a.Dev(0, "device") : at::Device(at::kCPU);
  at::Generator g = dev.is_cuda() ? at::globalContext().defaultGenerator(dev) : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lk(g.mutex());
  return wrap(a.env(), at::Tensor(g.get_state()));
}
DEFN(setRngState) {
  at::Device dev = a.Dev(0, "device");
  at::Tensor st = a.T(1, "state");
  at::Generator g = dev.is_cuda() ? at::globalContext().defaultGenerator(dev) : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lk(g.mutex());
  g.set_state(st);
  return a.env().Undefined();
}
DEFN(setNumThreads) {
  at::set_num_threads(int(a.I(0, "threads")));
  return a.env().Undefined();
}
DEFN(getNumThreads) { return Napi::Number::New(a.env(), at::get_num_threads()); }
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
    ENTRY(fromBuffer), ENTRY(toBuffer), ENTRY(item), ENTRY(shape), ENTRY(strides), ENTRY(dtype),
    ENTRY(device), ENTRY(numel), ENTRY(dim), ENTRY(isContiguous), ENTRY(requiresGrad),
    ENTRY(setRequiresGrad), ENTRY(isLeaf), ENTRY(gradFn), ENTRY(dispose), ENTRY(isAlive),
    ENTRY(sameStorage), ENTRY(dataPtr), ENTRY(grad), ENTRY(setGrad), ENTRY(retainGrad),
    ENTRY(backward), ENTRY(autogradGrad), ENTRY(setGradEnabled), ENTRY(isGradEnabled),
    ENTRY(setAutocast), ENTRY(memory), ENTRY(cudaIsAvailable), ENTRY(cudaDeviceCount),
    ENTRY(cudaSynchronize), ENTRY(cudaEmptyCache), ENTRY(cudaMemoryStats), ENTRY(cudaDeviceInfo),
    ENTRY(manualSeed), ENTRY(getRngState), ENTRY(setRngState), ENTRY(setNumThreads),
    ENTRY(getNumThreads), ENTRY(buildInfo),
};

// At environment teardown (a worker exiting) every tensor still referenced is released. The EnvData
// itself is deliberately leaked (a few bytes): a zero-copy tensor held elsewhere may still queue its
// ArrayBuffer release into it.
static void keepEnvData(Napi::Env, EnvData* d) {
  for (auto& h : d->slots) {
    h.t.reset();
    h.alive = false;
  }
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Instance data per environment; deliberately leaked at env teardown (a few bytes per worker)
  // because GC finalizers of tensors may still run after it and reference it.
  auto* d = new EnvData();
  env.SetInstanceData<EnvData, keepEnvData>(d);
  registerAll(env, exports, std::begin(kCore), std::end(kCore));
  initOps(env, exports);
  initOptim(env, exports);
  initData(env, exports);
  return exports;
}

}  // namespace residual

static Napi::Object InitResidual(Napi::Env env, Napi::Object exports) { return residual::Init(env, exports); }
NODE_API_MODULE(residual, InitResidual)
