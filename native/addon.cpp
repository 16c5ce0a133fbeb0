// The addon's entry point: Init sets up the environment's state and registers every module's
// functions. Where things live (each file says what it holds):
//   binding/  residual.h (shared declarations), handles.cpp (tensor handles, memory accounting, the
//             environment's lifecycle), errors.cpp (C++ exceptions -> JS error classes), args.cpp
//             (argument readers), options.h/.cpp (option-object readers)
//   tensor.cpp (tensors from/to JS memory, metadata, autograd), runtime.cpp (grad mode, autocast,
//   devices, RNG, threads, configuration), ops.cpp (the op table), optim.cpp, graphs.cpp
//   loader/   the native data loaders on one worker-pool base (memory_loader.cpp, stream_loader.cpp)
//   image/    codecs, resampling, crop geometry and the tar reader: no torch, no Node (fuzzed: fuzz/)
//   image_ops.cpp  the image library's functions for JS (decode, resized crop, boxes, tar scan)
//   distributed/  c10d: process_group.cpp (the group, collectives, agreement across ranks), ddp.cpp (DDP
//             on the Reducer, SyncBatchNorm), store_ops.cpp (the store server for JS), store.cpp/.h
//             (the rendezvous store's server, no torch), dist.h (what they share); built by native/dist.cmake
// (PyTorch checkpoints are read in TypeScript: lib/io/torch.ts.)
#include "residual.h"

namespace residual {

// Module init never lets a C++ exception out: a worker_thread terminated while it loads the library
// makes every N-API call fail, and an exception escaping here would abort the whole process.
static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  try {
    if (!installEnvData(env)) return exports;
    initTensor(env, exports);
    initRuntime(env, exports);
    initOps(env, exports);
    initOptim(env, exports);
    initLoaders(env, exports);
    initImageOps(env, exports);
    initDist(env, exports);
    initDdp(env, exports);
    initDistStore(env, exports);
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
