// The one place where C++ exceptions become JS errors: every native function's entry() and every
// Promise a native worker settles go through rethrow()/errorValue(). The JS class comes from the
// exception: our own argument errors (TypeError, RangeError), kinds we raise (KindError), a bad file
// (image::ImageError: BadFileError), then libtorch's c10 exception types, and only for a plain
// c10::Error (or a ValueError) the message.
#include "residual.h"

#include "image/types.h"

namespace residual {

static const char* const kErrCodes[int(ErrKind::Count)] = {
    "ERR_RESIDUAL",          "ERR_RESIDUAL_SHAPE", "ERR_RESIDUAL_DTYPE",    "ERR_RESIDUAL_DEVICE",
    "ERR_RESIDUAL_DISPOSED", "ERR_RESIDUAL_OOM",   "ERR_RESIDUAL_BAD_FILE",
};

static bool has(const std::string& s, const char* w) { return s.find(w) != std::string::npos; }

// The kind c10's exception type decides (TORCH_CHECK_INDEX, TORCH_CHECK_TYPE, TORCH_CHECK_NOT_IMPLEMENTED,
// ...), or none: a plain c10::Error (TORCH_CHECK) and a ValueError (TORCH_CHECK_VALUE, used for size
// mismatches as much as for values) are sorted by their message.
static std::optional<ErrKind> kindOfType(const c10::Error& e, const std::string& m) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return ErrKind::OOM;
  if (dynamic_cast<const c10::IndexError*>(&e)) return ErrKind::Shape;  // dims and indices out of range
  if (dynamic_cast<const c10::TypeError*>(&e)) return ErrKind::Dtype;
  // a kernel missing for a dtype ("not implemented for 'Bool'"), or for a backend ("Could not run
  // 'aten::view' with arguments from the 'SparseCPU' backend")
  if (dynamic_cast<const c10::NotImplementedError*>(&e)) return has(m, "backend") ? ErrKind::Device : ErrKind::Dtype;
  if (dynamic_cast<const c10::AcceleratorError*>(&e)) return ErrKind::Device;
  // a singular matrix, a distributed failure, a non-finite value: none of the tensor kinds
  if (dynamic_cast<const c10::LinAlgError*>(&e) || dynamic_cast<const c10::DistError*>(&e) ||
      dynamic_cast<const c10::EnforceFiniteError*>(&e))
    return ErrKind::Generic;
  return std::nullopt;
}

// The kind of a libtorch error from its message. Order matters: memory, device, dtype, then shape (a
// dtype message may also mention sizes).
static ErrKind kindOfMessage(const std::string& m) {
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
  return ErrKind::Generic;
}

// libtorch's message without its C++ backtrace or "Exception raised from ..." trailer.
static std::string torchMessage(const c10::Error& e) {
  std::string msg = e.what_without_backtrace();
  auto pos = msg.find("\nException raised from");
  if (pos != std::string::npos) msg = msg.substr(0, pos);
  return msg;
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
    } catch (const image::ImageError& e) {
      throwJs(env, ErrKind::BadFile, nullptr, prefix + e.what());
    } catch (const c10::Error& e) {
      std::string msg = torchMessage(e);
      throwJs(env, kindOfType(e, msg).value_or(kindOfMessage(msg)), nullptr, prefix + msg);
    } catch (const std::bad_alloc&) {
      throwJs(env, ErrKind::OOM, nullptr, prefix + "out of memory");
    } catch (const std::exception& e) {
      throwJs(env, ErrKind::Generic, nullptr, prefix + e.what());
    } catch (...) {
      throwJs(env, ErrKind::Generic, nullptr, prefix + "unknown native error");
    }
  } catch (...) {}
}

napi_value errorValue(napi_env env, const char* fn, std::exception_ptr e) noexcept {
  try {
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) != napi_ok) return nullptr;
    if (!pending) {
      try {
        if (e) std::rethrow_exception(e);
        throw std::runtime_error("failed");
      } catch (...) {
        rethrow(env, fn);
      }
    }
    napi_value err = nullptr;
    if (napi_get_and_clear_last_exception(env, &err) != napi_ok) return nullptr;
    return err;
  } catch (...) {
    return nullptr;
  }
}

}  // namespace residual
