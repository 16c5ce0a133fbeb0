// The runtime: grad mode and autocast, memory counters, CUDA devices, RNG state, threads, CPU memory
// caching, the TS layer's configuration (error classes) and build information.
#include "residual.h"

#if defined(RESIDUAL_CUDA)
// Only c10/cuda and the CUDA runtime: ATen/cuda headers pull in cuBLAS/cuSPARSE headers, which a
// compile-only CUDA toolkit may lack.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/ops/_nnpack_available.h>
#include <c10/util/Logging.h>
#include <torch/version.h>

#include <limits>
#include <mutex>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace residual {

// ---- grad mode ----------------------------------------------------------------------------------

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
  if (a.has(0))
    torch::cuda::synchronize(a.I(0, "device"));
  else
    torch::cuda::synchronize();
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
// configure({errorClasses: {shape, dtype, device, disposed, oom, badFile, generic}, maxArrayBufferBytes}):
// called once per environment by lib/addon/binding.ts.
DEFN(configure) {
  if (!a.has(0) || !a.info[0].IsObject()) a.fail(0, "options", "an object");
  Napi::Env env = a.env();
  EnvData* d = envData(env);
  auto o = a.info[0].As<Napi::Object>();
  Napi::Value classes = o.Get("errorClasses");
  if (classes.IsObject()) {
    static const char* const keys[int(ErrKind::Count)] = {"generic", "shape", "dtype", "device", "disposed", "oom", "badFile"};
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
bool distHasGloo();  // native/distributed/process_group.cpp

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

// The ScalarType codes of the supported dtypes, so the TS layer repeats no magic numbers.
static Napi::Object dtypeCodes(Napi::Env env) {
  auto o = Napi::Object::New(env);
  const std::pair<const char*, at::ScalarType> codes[] = {
      {"uint8", at::kByte},   {"int8", at::kChar},     {"int16", at::kShort},    {"int32", at::kInt}, {"int64", at::kLong},
      {"float16", at::kHalf}, {"float32", at::kFloat}, {"float64", at::kDouble}, {"bool", at::kBool}, {"bfloat16", at::kBFloat16},
  };
  for (auto& [name, st] : codes) o.Set(name, Napi::Number::New(env, int(st)));
  return o;
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kRuntime[] = {
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
    ENTRY(maxNumThreads),        // () => number
    ENTRY(buildInfo),            // () => BuildInfo
    ENTRY(configure),            // (options: ConfigureOptions) => void
    ENTRY(setCpuMemoryCaching),  // (enabled: boolean) => boolean
    ENTRY(getCpuMemoryCaching),  // () => boolean
};
// clang-format on

// NNPACK: where it cannot run (some CPUs and virtual machines), libtorch logs "Could not initialize NNPACK!
// Reason: Unsupported hardware." for every convolution that considers it, hundreds of lines in a training
// run. Asked once per process with c10's log level raised; where it cannot run, it is switched off, which
// is what each convolution would conclude anyway (libtorch uses NNPACK only when it is available), so no
// kernel choice changes.
static void probeNnpackQuietly() {
  static std::once_flag once;
  std::call_once(once, [] {
    const int saved = FLAGS_caffe2_log_level;
    FLAGS_caffe2_log_level = 2;  // errors only
    bool available = false;
    try {
      available = at::_nnpack_available();
    } catch (...) {}
    FLAGS_caffe2_log_level = saved;
    if (!available) at::globalContext().setUserEnabledNNPACK(false);
  });
}

void initRuntime(Napi::Env env, Napi::Object exports) {
  probeNnpackQuietly();
  registerAll(env, exports, std::begin(kRuntime), std::end(kRuntime));
  exports.Set("dtypeCodes", dtypeCodes(env));  // Readonly<Record<string, number>>
}

}  // namespace residual
