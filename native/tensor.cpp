// Tensors: from and to JS memory, metadata, lifetime (dispose) and autograd.
#include "residual.h"

namespace residual {

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
    if (napi_get_typedarray_info(env, a.info[0], &tt, &len, &data, &buf, &off0) == napi_ok &&
        napi_is_arraybuffer(env, buf, &isAb) == napi_ok && !isAb) {
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
    throw ArgError("argument 'data' holds " + std::to_string(avail) + " bytes, shape needs " + std::to_string(need) + " from offset " +
                   std::to_string(off));
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
  if (st != napi_no_external_buffers_allowed)
    throw KindError(ErrKind::OOM, "could not create an ArrayBuffer of " + std::to_string(owned->nbytes()) + " bytes");
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
      throw RangeArgError("the value " + std::to_string(v) +
                          " is outside Number.MAX_SAFE_INTEGER (2^53 - 1) and cannot be a number exactly: use itemBigInt()");
  }
  return wrap(a.env(), s);
}
DEFN(itemBigInt) {
  at::Tensor t = a.T(0, "tensor");
  if (t.numel() != 1)
    throw KindError(ErrKind::Shape, "itemBigInt() needs a tensor with one element, this one has " + std::to_string(t.numel()));
  if (!at::isIntegralType(t.scalar_type(), true))
    throw KindError(ErrKind::Dtype,
                    "itemBigInt() needs an integer or bool tensor, this one is " + std::string(c10::toString(t.scalar_type())));
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
  HandleState why = HandleState::NotTensor;
  Handle* h = asHandle(a.env(), a.info[0], &why);
  if (!h && why != HandleState::Stale) badHandle(why, "argument 'tensor'", describe(a.info[0]));
  if (h) releaseHandle(a.env(), envData(a.env()), h);
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
DEFN(dataPtr) { return Napi::Number::New(a.env(), double(reinterpret_cast<uintptr_t>(a.T(0, "tensor").data_ptr()))); }

// ---- autograd -----------------------------------------------------------------------------------

DEFN(grad) { return wrap(a.env(), a.T(0, "tensor").grad()); }
DEFN(setGrad) {
  at::Tensor t = a.T(0, "tensor");
  if (!a.has(1)) {
    t.mutable_grad().reset();
  } else {
    at::Tensor g = a.T(1, "grad");
    if (g.sizes() != t.sizes())
      throw ArgError("argument 'grad' has shape " + c10::str(g.sizes()) + ", the tensor has " + c10::str(t.sizes()));
    if (g.scalar_type() != t.scalar_type() || g.device() != t.device())
      throw ArgError("argument 'grad' must match the tensor's dtype and device");
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
  if (!g && t.numel() != 1)
    throw ArgError("backward() without a gradient needs a scalar output, this one has shape " + c10::str(t.sizes()));
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
// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kTensor[] = {
    ENTRY(fromBuffer),       // (data: ArrayBuffer | ArrayBufferView, byteOffset: number, shape: IntList, dtype: number, copy: boolean) => Handle
    ENTRY(toBuffer),         // (tensor: Handle) => ArrayBuffer
    ENTRY(item),             // (tensor: Handle) => number | boolean
    ENTRY(itemBigInt),       // (tensor: Handle) => bigint
    ENTRY(shape),            // (tensor: Handle) => number[]
    ENTRY(strides),          // (tensor: Handle) => number[]
    ENTRY(dtype),            // (tensor: Handle) => number
    ENTRY(device),           // (tensor: Handle) => Device
    ENTRY(numel),            // (tensor: Handle) => number
    ENTRY(dim),              // (tensor: Handle) => number
    ENTRY(isContiguous),     // (tensor: Handle, channelsLast?: boolean | null) => boolean
    ENTRY(requiresGrad),     // (tensor: Handle) => boolean
    ENTRY(setRequiresGrad),  // (tensor: Handle, requiresGrad: boolean) => void
    ENTRY(isLeaf),           // (tensor: Handle) => boolean
    ENTRY(gradFn),           // (tensor: Handle) => string | null
    ENTRY(dispose),          // (tensor?: Handle | null) => void
    ENTRY(isAlive),          // (tensor?: Handle | null) => boolean
    ENTRY(sameStorage),      // (a: Handle, b: Handle) => boolean
    ENTRY(dataPtr),          // (tensor: Handle) => number
    ENTRY(grad),             // (tensor: Handle) => Handle | null
    ENTRY(setGrad),          // (tensor: Handle, grad?: Handle | null) => void
    ENTRY(retainGrad),       // (tensor: Handle) => void
    ENTRY(backward),         // (tensor: Handle, gradient?: Handle | null, retainGraph?: boolean | null, createGraph?: boolean | null) => void
    ENTRY(autogradGrad),     // (outputs: readonly Handle[], inputs: readonly Handle[], gradOutputs?: readonly Handle[] | null, retainGraph?: boolean | null, createGraph?: boolean | null, allowUnused?: boolean | null) => (Handle | null)[]
};
// clang-format on

void initTensor(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(kTensor), std::end(kTensor)); }

}  // namespace residual
