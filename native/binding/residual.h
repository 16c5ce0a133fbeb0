// The binding layer's shared declarations: tensor handles (binding/handles.cpp), the one place where C++
// exceptions become JS errors (binding/errors.cpp), argument readers that name the bad argument
// (binding/args.cpp), result wrapping, and each module's init function. Every torch-side translation
// unit includes this header; the image library (native/image/) does not.
#pragma once
#include "pch.h"

namespace residual {

struct EnvData;

// One JS-visible reference to a tensor: a slot in its environment's handle table. JS holds the slot's
// id, a plain number (index + generation), so creating a tensor allocates no V8 object and no weak
// reference. dispose() drops the tensor at once and bumps the generation, so a stale id is recognised
// as used-after-dispose; the JS side's FinalizationRegistry is only a backstop.
//
// An id is tag * 2^42 + gen * 2^22 + index (53 bits, exact in a double): `tag` is the environment's
// random tag (11 bits, unique among live environments), so an id from another environment (a Tensor
// posted to a worker_thread) or a made-up number is refused instead of addressing this environment's
// tensors; `gen` (20 bits) changes on every reuse of the slot, and a slot whose generations are used
// up is retired (never reused), so no id is ever issued twice.
struct Handle {
  at::Tensor t;
  c10::StorageImpl* storage = nullptr;  // registered storage (for byte counters), or null
  uint32_t gen = 1;                     // 1 .. 2^20 - 1
  uint32_t index = 0;
  bool alive = false;
};
constexpr uint32_t kIndexBits = 22, kGenBits = 20, kTagBits = 11;
constexpr uint64_t kSlotMax = uint64_t(1) << kIndexBits;  // slots at most per environment

// Error kinds: rethrow() builds the JS class registered for the kind (lib/core/errors.ts, passed in by
// native.setErrorClasses), or a plain Error with `code` set when none was registered.
enum class ErrKind : int { Generic = 0, Shape, Dtype, Device, Disposed, OOM, BadFile, Count };

// Per-environment (main thread, each worker_thread) state: the addon is context-aware.
struct EnvData {
  uint32_t tag = 1;      // this environment's id tag (see Handle)
  uint64_t tagBits = 0;  // tag << (kGenBits + kIndexBits)
  // This environment's CPU generator: every random op of the environment draws from it, so workers
  // never share (or race on) one random stream; manualSeed/getRngState/setRngState act on it.
  at::Generator gen;
  napi_ref errorClasses[int(ErrKind::Count)] = {nullptr};
  double maxArrayBufferBytes = 4294967296.0;  // buffer.constants.MAX_LENGTH (set by the TS layer)
  int64_t liveTensors = 0;
  // storage -> (handles referring to it, bytes counted, device slot)
  struct StorageRec {
    int64_t refs;
    int64_t bytes;
    int slot;
  };
  std::unordered_map<c10::StorageImpl*, StorageRec> storages;
  int64_t bytesBySlot[17] = {0};  // slot 0: cpu, 1+N: cuda:N
  // The handle table (a deque: slots never move) and its free list.
  std::deque<Handle> slots;
  std::vector<uint32_t> freeSlots;
  // CPU bytes not yet reported to V8 (reported in batches: each report can trigger GC heuristics).
  int64_t unreportedBytes = 0;
  // References to JS ArrayBuffers that back zero-copy tensors; libtorch may free such a tensor on
  // any thread, so their release is queued and drained on the JS thread.
  std::mutex pendingMu;
  std::vector<napi_ref> pendingUnref;
  std::atomic<bool> hasPending{false};
};

EnvData* envData(Napi::Env env);
void drainPending(Napi::Env env, EnvData* d);
// A new environment's state (its tag taken), installed as the environment's instance data; false if
// the environment is going away. At teardown its tensors are released (binding/handles.cpp).
bool installEnvData(Napi::Env env);
// Drops a handle's tensor and frees its slot for reuse under a new generation.
void releaseHandle(napi_env env, EnvData* d, Handle* h);

// An error in what JS passed: becomes a TypeError naming the function and the argument.
struct ArgError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A value out of the range allowed: becomes a RangeError.
struct RangeArgError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// An error of a known kind: becomes the kind's class (ShapeError, DtypeError, ...).
struct KindError : std::runtime_error {
  ErrKind kind;
  KindError(ErrKind k, const std::string& m) : std::runtime_error(m), kind(k) {}
};

std::string describe(const Napi::Value& v);
// A JS number as an exact integer, or a RangeError (NaN, Infinity, beyond 2^53 - 1) / TypeError
// (fractions) naming `what`.
int64_t exactInt(double v, const std::string& what);
// A number as JS would print it (NaN, Infinity, up to 17 significant digits).
std::string numText(double v);
// The live Handle behind a JS value; null if it is not a live tensor id of this environment. `why`
// (when given) says why not.
enum class HandleState { Ok, NotTensor, Stale, Foreign };
Handle* asHandle(napi_env env, napi_value v, HandleState* why = nullptr);
// Throws the error for a value that is not a live tensor (names the argument).
[[noreturn]] void badHandle(HandleState why, const std::string& what, const std::string& got);
// Tensors of a JS array, each checked (names the argument and element in errors).
std::vector<at::Tensor> tensorsOf(Napi::Env env, const Napi::Value& v, const std::string& what);

struct Args {
  const Napi::CallbackInfo& info;
  const char* fn;
  Args(const Napi::CallbackInfo& i, const char* f) : info(i), fn(f) {}
  Napi::Env env() const { return info.Env(); }
  // The environment's CPU generator, or none for other devices (libtorch's default for them).
  std::optional<at::Generator> gen(const at::Device& d) const {
    if (d.is_cpu()) return envData(info.Env())->gen;
    return std::nullopt;
  }
  size_t size() const { return info.Length(); }
  bool has(size_t i) const { return i < info.Length() && !info[i].IsUndefined() && !info[i].IsNull(); }
  [[noreturn]] void fail(size_t i, const char* name, const std::string& want) const;

  Handle* H(size_t i, const char* name) const;
  at::Tensor T(size_t i, const char* name) const { return H(i, name)->t; }
  std::optional<at::Tensor> OT(size_t i, const char* name) const;
  // A tensor, or a scalar passed boxed as [number|boolean] (tensor ids are numbers themselves).
  at::Tensor TOS(size_t i, const char* name) const;
  std::vector<at::Tensor> TL(size_t i, const char* name) const;
  std::vector<std::optional<at::Tensor>> OTL(size_t i, const char* name) const;
  at::Scalar S(size_t i, const char* name) const;
  std::optional<at::Scalar> OS(size_t i, const char* name) const;
  double D(size_t i, const char* name) const;
  std::optional<double> OD(size_t i, const char* name) const;
  int64_t I(size_t i, const char* name) const;
  std::optional<int64_t> OI(size_t i, const char* name) const;
  bool B(size_t i, const char* name) const;
  std::vector<int64_t> IL(size_t i, const char* name) const;  // number or array of numbers
  struct OptIL {
    std::optional<std::vector<int64_t>> v;
    operator at::OptionalIntArrayRef() const { return v ? at::OptionalIntArrayRef(*v) : c10::nullopt; }
  };
  OptIL OIL(size_t i, const char* name) const;
  std::string Str(size_t i, const char* name) const;
  std::optional<std::string> OStr(size_t i, const char* name) const;
  at::ScalarType Dtype(size_t i, const char* name) const;
  std::optional<at::ScalarType> ODtype(size_t i, const char* name) const;
  at::Device Dev(size_t i, const char* name) const;
  // dtype code at i, device string at i+1 (either may be undefined: libtorch defaults).
  at::TensorOptions Opts(size_t i) const;
};

at::Device parseDevice(const std::string& s);
std::string deviceString(const at::Device& d);

Napi::Value wrap(Napi::Env env, at::Tensor t);
inline Napi::Value wrap(Napi::Env env, const std::tuple<at::Tensor, at::Tensor>& t) {
  auto a = Napi::Array::New(env, 2);
  a.Set(uint32_t(0), wrap(env, std::get<0>(t)));
  a.Set(uint32_t(1), wrap(env, std::get<1>(t)));
  return a;
}
inline Napi::Value wrap(Napi::Env env, const std::tuple<at::Tensor, at::Tensor, at::Tensor>& t) {
  auto a = Napi::Array::New(env, 3);
  a.Set(uint32_t(0), wrap(env, std::get<0>(t)));
  a.Set(uint32_t(1), wrap(env, std::get<1>(t)));
  a.Set(uint32_t(2), wrap(env, std::get<2>(t)));
  return a;
}
Napi::Value wrap(Napi::Env env, const std::vector<at::Tensor>& v);
inline Napi::Value wrap(Napi::Env env, double v) { return Napi::Number::New(env, v); }
inline Napi::Value wrap(Napi::Env env, int64_t v) { return Napi::Number::New(env, double(v)); }
inline Napi::Value wrap(Napi::Env env, bool v) { return Napi::Boolean::New(env, v); }
Napi::Value wrap(Napi::Env env, const at::Scalar& s);

// Every native function goes through entry(): C++ exceptions never reach Node as crashes.
// rethrow() (called inside a catch block) turns the current exception into a pending JS exception of
// the right class, and never throws itself (also while the environment is being torn down).
// libtorch's c10::Error keeps its message, not its C++ backtrace; its kind comes from c10's exception
// type first, then from the message (binding/errors.cpp).
void rethrow(napi_env env, const char* fn) noexcept;
// The JS error rethrow() would throw for `e` (an exception captured on another thread), as a value to
// reject a Promise with; null if none can be made (the environment is going away).
napi_value errorValue(napi_env env, const char* fn, std::exception_ptr e) noexcept;
// Throws a JS error of `kind` (or a TypeError/RangeError) without C++ exceptions; never throws.
void throwJs(napi_env env, ErrKind kind, const char* jsType, const std::string& msg) noexcept;

template <Napi::Value (*F)(Args&), const char* Name>
Napi::Value entry(const Napi::CallbackInfo& info) {
  try {
    Args a(info, Name);
    return F(a);
  } catch (...) {
    rethrow(info.Env(), Name);
    return Napi::Value();
  }
}

using NativeFn = Napi::Value (*)(const Napi::CallbackInfo&);
struct FnEntry {
  const char* name;
  NativeFn fn;
};
void registerAll(Napi::Env env, Napi::Object exports, const FnEntry* begin, const FnEntry* end);

// Hand-written native functions: `DEFN(name) { ... }` defines `fn_name(Args& a)` and its name;
// `ENTRY(name),  // (arg: Type, ...) => Result` is its line in the module's registration table: one
// function a line, with its TypeScript signature in the comment (and an exports.Set line likewise
// carries its TypeScript type). scripts/codegen/gen-native-types.mjs writes lib/addon/binding.generated.ts
// from these lines, and checks each signature against the `a.<reader>(index, "name")` reads of the body
// (name, type and optionality). The types (Handle, IntList, NativeLoader, ...) are lib/addon/native-types.ts's.
// Ops use the table in ops.cpp, whose signatures come from the readers themselves.
#define DEFN(name)                             \
  static constexpr char name##_name[] = #name; \
  static Napi::Value fn_##name(::residual::Args& a)
// clang-format off
#define ENTRY(name) ::residual::FnEntry{#name, &::residual::entry<&fn_##name, name##_name>}
// clang-format on

// Throws an OutOfMemoryError when the tensor's elements exceed the largest ArrayBuffer (checked before
// any copy to JS memory is made).
void checkFitsArrayBuffer(Napi::Env env, const at::Tensor& t);

// Each module registers its functions (called by Init in native/addon.cpp).
void initTensor(Napi::Env env, Napi::Object exports);   // native/tensor.cpp
void initRuntime(Napi::Env env, Napi::Object exports);  // native/runtime.cpp
void initOps(Napi::Env env, Napi::Object exports);
void initOptim(Napi::Env env, Napi::Object exports);
void initLoaders(Napi::Env env, Napi::Object exports);    // native/loader/
void initImageOps(Napi::Env env, Napi::Object exports);   // native/image_ops.cpp
void initDist(Napi::Env env, Napi::Object exports);       // native/distributed/process_group.cpp (c10d)
void initDdp(Napi::Env env, Napi::Object exports);        // native/distributed/ddp.cpp (c10d)
void initDistStore(Napi::Env env, Napi::Object exports);  // native/distributed/store_ops.cpp

}  // namespace residual
