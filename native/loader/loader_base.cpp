// The loader base (see loader_base.h): common options, the worker pool, the batch hand-off, and the
// JS functions every native loader shares.
#include "loader/loader_base.h"

#if defined(RESIDUAL_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace residual {

// ---- options -----------------------------------------------------------------------------------

CommonCfg readCommon(const Options& o, int64_t channels, int64_t defaultWorkers) {
  CommonCfg c;
  c.batch = o.integer("batchSize", 1, 1, int64_t(1) << 24);
  c.workers = o.integer("workers", defaultWorkers, 1, 64);
  c.prefetch = o.integer("prefetch", 2, 1, int64_t(1) << 16);
  c.shuffle = o.flag("shuffle", false);
  c.seed = uint64_t(o.integer("seed", 0, 0, Options::kMaxSafe));
  c.dropLast = o.flag("dropLast", false);
  for (double v : o.numbers("mean")) c.mean.push_back(float(v));
  for (double v : o.numbers("std")) c.std.push_back(float(v));
  for (auto* v : {&c.mean, &c.std})
    if (!v->empty() && v->size() != 1 && int64_t(v->size()) != channels)
      throw RangeArgError("mean/std must have 1 or " + std::to_string(channels) + " entries (one per channel), got " +
                          std::to_string(v->size()));
  for (float s : c.std)
    if (!(s > 0)) throw RangeArgError("std entries must be positive, got " + numText(s));
  c.device = o.device("device", at::Device(at::kCPU));
  c.pin = o.flag("pinMemory", c.device.is_cuda());
  c.channelsLast = o.flag("channelsLast", false);
  return c;
}

void normalisers(const CommonCfg& c, int64_t channels, std::vector<float>& scale, std::vector<float>& shift) {
  scale.resize(size_t(channels));
  shift.resize(size_t(channels));
  for (int64_t k = 0; k < channels; k++) {
    float m = c.mean.empty() ? 0.f : c.mean[c.mean.size() == 1 ? 0 : size_t(k)];
    float s = c.std.empty() ? 1.f : c.std[c.std.size() == 1 ? 0 : size_t(k)];
    scale[size_t(k)] = 1.f / (255.f * s);
    shift[size_t(k)] = -m / s;
  }
}

// ---- the worker pool ---------------------------------------------------------------------------

int64_t LoaderBase::start(uint64_t ep, const std::vector<int64_t>* indices) {
  halt();
  std::lock_guard<std::mutex> lk(mu);
  if (closed_) throw std::runtime_error("the data loader was closed");
  clear();
  epoch = ep;
  plan(ep, indices);
  stop_ = false;
  running_ = true;
  started_ = true;
  error_ = nullptr;
  for (int64_t w = 0; w < common.workers; w++) threads_.emplace_back([this, w] { run(w); });
  return numBatches;
}

void LoaderBase::run(int64_t w) {
  try {
    at::NoGradGuard ng;
    work(w);
  } catch (...) {
    fail(std::current_exception());
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    exited(w);
  }
  cv.notify_all();
}

bool LoaderBase::stopping() {
  std::lock_guard<std::mutex> lk(mu);
  return stop_;
}

void LoaderBase::fail(std::exception_ptr e) {
  {
    std::lock_guard<std::mutex> lk(mu);
    if (!error_) error_ = std::move(e);
  }
  cv.notify_all();
}

void LoaderBase::halt() {
  std::vector<std::thread> ts;
  {
    std::lock_guard<std::mutex> lk(mu);
    stop_ = true;
    ts.swap(threads_);
  }
  cv.notify_all();
  for (auto& t : ts)
    if (t.joinable()) t.join();
  {
    std::lock_guard<std::mutex> lk(mu);
    running_ = false;
  }
  cv.notify_all();
}

void LoaderBase::stop() {
  halt();
  std::lock_guard<std::mutex> lk(mu);
  clear();
}

void LoaderBase::close() {
  {
    std::lock_guard<std::mutex> lk(mu);
    closed_ = true;
  }
  stop();
}

bool LoaderBase::take(Batch& out, std::exception_ptr& err) {
  std::unique_lock<std::mutex> lk(mu);
  for (;;) {
    if (closed_) {
      err = std::make_exception_ptr(std::runtime_error("the data loader was closed"));
      return false;
    }
    if (error_) {
      err = error_;
      return false;
    }
    if (!started_) {
      err = std::make_exception_ptr(std::runtime_error("the data loader was not started"));
      return false;
    }
    Poll p = poll(out);
    if (p == Poll::End) return false;
    if (p == Poll::Got) {
      lk.unlock();
      cv.notify_all();
      try {
        prepare(out);
      } catch (...) {
        err = std::current_exception();
        out = Batch();
        return false;
      }
      return true;
    }
    if (!running_) {
      err = std::make_exception_ptr(std::runtime_error("the data loader was stopped (a new epoch was started, or the epoch was left)"));
      return false;
    }
    cv.wait(lk);
  }
}

LoaderBase::State LoaderBase::state() {
  std::lock_guard<std::mutex> lk(mu);
  return {running_, closed_, held()};
}

int64_t LoaderBase::drainSkipped(std::vector<std::pair<std::string, std::string>>& recent) {
  recent.clear();
  return 0;
}

#if defined(RESIDUAL_CUDA)
// Host-to-device copies of pinned batches go on a side stream (RESIDUAL_LOADER_COPY_STREAM=0: on the
// default stream, as before), so the DMA overlaps the training kernels queued on the default stream.
static bool copyStreamEnabled() {
  static const bool on = [] {
    const char* v = std::getenv("RESIDUAL_LOADER_COPY_STREAM");
    return !(v && std::string(v) == "0");
  }();
  return on;
}
#endif

void LoaderBase::deliver(at::Tensor& x, at::Tensor& y, bool pinned) const {
  if (common.channelsLast) x = x.contiguous(at::MemoryFormat::ChannelsLast);
#if defined(RESIDUAL_CUDA)
  if (pinned && copyStreamEnabled()) {
    // Copy on a pool stream; this worker thread waits for it (not the JS thread), so the batch is on
    // the device before it is handed out and the consumer needs no event. record_stream: the memory
    // is used by the consumer's (default) stream, so the allocator does not hand it to the next copy
    // while the training kernels may still read it.
    const c10::DeviceIndex dev = common.device.has_index() ? common.device.index() : 0;
    c10::cuda::CUDAStream copy = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, dev);
    {
      c10::cuda::CUDAStreamGuard guard(copy);
      x = x.to(common.device, /*non_blocking=*/true);
      y = y.to(common.device, /*non_blocking=*/true);
    }
    copy.synchronize();
    c10::cuda::CUDAStream consumer = c10::cuda::getDefaultCUDAStream(dev);
    x.record_stream(consumer);
    y.record_stream(consumer);
    return;
  }
#endif
  if (!common.device.is_cpu()) {
    x = x.to(common.device, /*non_blocking=*/pinned);
    y = y.to(common.device, /*non_blocking=*/pinned);
  }
}

// ---- JS ----------------------------------------------------------------------------------------

static const napi_type_tag kLoaderTag = {0x51a0c3e7b2d94f68ULL, 0x0f1e2d3c4b5a6978ULL};

static void closeHook(void* p) { static_cast<LoaderBase*>(p)->close(); }

Napi::Value adoptLoader(Napi::Env env, std::unique_ptr<LoaderBase> loader) {
  LoaderBase* raw = loader.get();
  if (napi_add_env_cleanup_hook(env, closeHook, raw) != napi_ok) throw std::runtime_error("cannot register the loader's teardown");
  loader.release();
  auto ext = Napi::External<LoaderBase>::New(env, raw, [](Napi::Env e, LoaderBase* p) {
    napi_remove_env_cleanup_hook(e, closeHook, p);
    delete p;
  });
  napi_type_tag_object(env, ext, &kLoaderTag);
  return ext;
}

static LoaderBase* getLoader(Args& a, size_t i) {
  bool ok = false;
  if (i >= a.size() || !a.info[i].IsExternal() || napi_check_object_type_tag(a.env(), a.info[i], &kLoaderTag, &ok) != napi_ok || !ok)
    a.fail(i, "loader", "a native data loader");
  return a.info[i].As<Napi::External<LoaderBase>>().Data();
}

static Napi::Value batchValue(Napi::Env env, Batch& b) { return wrap(env, std::tuple<at::Tensor, at::Tensor>(b.x, b.y)); }

// The next batch as a Promise: LoaderBase::take waits on a libuv thread (never touching JS); the batch
// becomes JS values on the JS thread, and a failure the error rethrow() makes for it. The JS loader
// object is kept referenced while the wait is pending. Nothing escapes the callbacks: they also run
// while a worker thread's environment is torn down.
class NextBatchWorker : public Napi::AsyncWorker {
 public:
  NextBatchWorker(Napi::Env env, LoaderBase* l, const Napi::Value& loaderObject)
      : Napi::AsyncWorker(env), L(l), deferred(Napi::Promise::Deferred::New(env)), keepAlive(Napi::Persistent(loaderObject)) {}
  void Execute() override { got = L->take(b, err); }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      Napi::HandleScope hs(env);
      if (!err) {
        deferred.Resolve(got ? batchValue(env, b) : env.Null());
        return;
      }
    } catch (...) {
      err = std::current_exception();
    }
    reject();
  }
  void OnError(const Napi::Error&) override {
    if (!err) err = std::make_exception_ptr(std::runtime_error("the wait for a batch failed"));
    reject();
  }
  Napi::Promise promise() const { return deferred.Promise(); }

 private:
  void reject() noexcept {
    try {
      napi_value e = errorValue(Env(), "loaderNext", err);
      if (e) deferred.Reject(Napi::Value(Env(), e));
    } catch (...) {}
  }
  LoaderBase* L;
  Batch b;
  bool got = false;
  std::exception_ptr err;
  Napi::Promise::Deferred deferred;
  Napi::Reference<Napi::Value> keepAlive;
};

// loaderStart(loader, epoch, indices?) -> batches in the epoch
DEFN(loaderStart) {
  LoaderBase* L = getLoader(a, 0);
  int64_t ep = a.I(1, "epoch");
  if (ep < 0) throw RangeArgError("argument 'epoch' must be at least 0, got " + std::to_string(ep));
  if (a.has(2)) {
    std::vector<int64_t> idx = a.IL(2, "indices");
    return Napi::Number::New(a.env(), double(L->start(uint64_t(ep), &idx)));
  }
  return Napi::Number::New(a.env(), double(L->start(uint64_t(ep), nullptr)));
}

// loaderLength(loader, epoch?) -> batches per epoch (for shards, an upper bound: skipped samples can
// make it fewer)
DEFN(loaderLength) {
  LoaderBase* L = getLoader(a, 0);
  std::optional<uint64_t> ep;
  if (a.has(1)) {
    int64_t e = a.I(1, "epoch");
    if (e < 0) throw RangeArgError("argument 'epoch' must be at least 0, got " + std::to_string(e));
    ep = uint64_t(e);
  }
  return Napi::Number::New(a.env(), double(L->length(ep)));
}

// loaderNextSync(loader) -> [x, y] | null, waiting on this thread.
DEFN(loaderNextSync) {
  Batch b;
  std::exception_ptr err;
  if (!getLoader(a, 0)->take(b, err)) {
    if (err) std::rethrow_exception(err);
    return a.env().Null();
  }
  return batchValue(a.env(), b);
}

// loaderNext(loader) -> Promise<[x, y] | null>, waiting on a libuv thread.
DEFN(loaderNext) {
  auto* w = new NextBatchWorker(a.env(), getLoader(a, 0), a.info[0]);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

DEFN(loaderStop) {
  getLoader(a, 0)->stop();
  return a.env().Undefined();
}

DEFN(loaderClose) {
  getLoader(a, 0)->close();
  return a.env().Undefined();
}

// loaderSkipped(loader) -> { count, errors: [{ path, message }] }: samples skipped so far, and the
// recent ones not reported before (at most 100).
DEFN(loaderSkipped) {
  std::vector<std::pair<std::string, std::string>> list;
  int64_t count = getLoader(a, 0)->drainSkipped(list);
  Napi::Env env = a.env();
  auto o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, double(count)));
  auto arr = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) {
    auto e = Napi::Object::New(env);
    e.Set("path", Napi::String::New(env, list[i].first));
    e.Set("message", Napi::String::New(env, list[i].second));
    arr.Set(uint32_t(i), e);
  }
  o.Set("errors", arr);
  return o;
}

// loaderState(loader) -> { running, closed, held }: whether an epoch's workers are running, and the
// batches made ahead that the loader holds (for tests and diagnostics).
DEFN(loaderState) {
  LoaderBase::State st = getLoader(a, 0)->state();
  Napi::Env env = a.env();
  auto o = Napi::Object::New(env);
  o.Set("running", Napi::Boolean::New(env, st.running));
  o.Set("closed", Napi::Boolean::New(env, st.closed));
  o.Set("held", Napi::Number::New(env, double(st.held)));
  return o;
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kLoader[] = {
    ENTRY(loaderStart),     // (loader: NativeLoader, epoch: number, indices?: IntList | null) => number
    ENTRY(loaderLength),    // (loader: NativeLoader, epoch?: number | null) => number
    ENTRY(loaderNextSync),  // (loader: NativeLoader) => NativeBatch | null
    ENTRY(loaderNext),      // (loader: NativeLoader) => Promise<NativeBatch | null>
    ENTRY(loaderStop),      // (loader: NativeLoader) => void
    ENTRY(loaderClose),     // (loader: NativeLoader) => void
    ENTRY(loaderSkipped),   // (loader: NativeLoader) => LoaderSkipped
    ENTRY(loaderState),     // (loader: NativeLoader) => LoaderState
};
// clang-format on

void initLoaders(Napi::Env env, Napi::Object exports) {
  registerAll(env, exports, std::begin(kLoader), std::end(kLoader));
  initMemoryLoader(env, exports);
  initStreamLoader(env, exports);
}

}  // namespace residual
