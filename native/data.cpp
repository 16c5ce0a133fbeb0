// The data pipeline's hot loop, in native code on background threads: shuffling, batching, random crop
// with padding, horizontal flip, normalisation to float32, pinned memory and the non-blocking copy to
// CUDA. Batches are produced ahead (prefetch) by worker threads; each sample's augmentation draws
// from its own RNG seeded by (seed, epoch, position), so results are identical whatever the thread
// count or timing.
#include "residual.h"

#if defined(RESIDUAL_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace residual {

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

static const napi_type_tag kLoaderTag = {0x51a0c3e7b2d94f68ULL, 0x0f1e2d3c4b5a6978ULL};

struct LoaderCfg {
  at::Tensor images;  // uint8 [N, C, H, W], contiguous, CPU
  at::Tensor labels;  // int64 [N]
  int64_t batch = 1;
  bool shuffle = false;
  uint64_t seed = 0;
  bool dropLast = false;
  std::vector<float> mean, std;
  int64_t pad = 0;
  bool crop = false;
  bool flip = false;
  float erase = 0;  // random erasing probability (Zhong et al. 2017)
  at::Device device = at::Device(at::kCPU);
  bool pin = false;
  bool channelsLast = false;
  int64_t prefetch = 2;
  int64_t workers = 1;
};

struct Batch {
  at::Tensor x, y;
};

// splitmix64: a tiny, well-distributed RNG for per-sample decisions.
static inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct Loader {
  LoaderCfg cfg;
  std::vector<int64_t> order;
  int64_t numBatches = 0;
  uint64_t epoch = 0;

  // Shared state, guarded by mu. Workers read cfg/order/epoch without the lock: they are written only
  // in start(), before the workers of that epoch exist.
  std::mutex mu;
  std::condition_variable cv;
  std::map<int64_t, Batch> ready;
  int64_t nextProduce = 0, nextConsume = 0;
  bool stop = false;     // workers of the current epoch should exit
  bool running = false;  // an epoch was started and not halted
  bool closed = false;   // close(): no more batches ever; waiters wake up
  std::string error;
  std::vector<std::thread> threads;

  ~Loader() { close(); }

  // Stops and joins the workers of the current epoch, then wakes any waiter.
  void halt() {
    std::vector<std::thread> ts;
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
      ts.swap(threads);
    }
    cv.notify_all();
    for (auto& t : ts)
      if (t.joinable()) t.join();
    {
      std::lock_guard<std::mutex> lk(mu);
      running = false;
    }
    cv.notify_all();
  }

  void close() {
    {
      std::lock_guard<std::mutex> lk(mu);
      closed = true;
    }
    halt();
  }

  int64_t count() const { return cfg.images.size(0); }

  // `given`: this epoch's order (a sampler's indices, e.g. DistributedSampler), used as is.
  void start(uint64_t ep, const std::vector<int64_t>* given = nullptr) {
    halt();
    std::lock_guard<std::mutex> lk(mu);
    if (closed) throw std::runtime_error("the data loader was closed");
    epoch = ep;
    int64_t n = given ? int64_t(given->size()) : count();
    if (given) {
      order = *given;
    } else {
      order.resize(n);
      for (int64_t i = 0; i < n; i++) order[i] = i;
    }
    if (cfg.shuffle && !given) {
      std::mt19937_64 rng(mix(cfg.seed) ^ mix(ep + 0x5851f42d4c957f2dULL));
      for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = int64_t(rng() % uint64_t(i + 1));
        std::swap(order[i], order[j]);
      }
    }
    numBatches = cfg.dropLast ? n / cfg.batch : (n + cfg.batch - 1) / cfg.batch;
    ready.clear();
    nextProduce = nextConsume = 0;
    stop = false;
    running = true;
    error.clear();
    for (int64_t w = 0; w < cfg.workers; w++) threads.emplace_back([this] { work(); });
  }

  void work() {
    for (;;) {
      int64_t b;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop || nextProduce >= numBatches || nextProduce - nextConsume < cfg.prefetch; });
        if (stop || nextProduce >= numBatches) return;
        b = nextProduce++;
      }
      Batch out;
      try {
        out = make(b);
      } catch (const c10::Error& e) {
        std::lock_guard<std::mutex> lk(mu);
        error = e.what_without_backtrace();
        cv.notify_all();
        return;
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lk(mu);
        error = e.what();
        cv.notify_all();
        return;
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        ready[b] = std::move(out);
      }
      cv.notify_all();
    }
  }

  static double unit(uint64_t& r) {
    r = mix(r);
    return double(r >> 11) * (1.0 / 9007199254740992.0);
  }

  // Random erasing: a rectangle of 2%-40% of the image, aspect ratio 0.3-3.3, set to 0 (the mean, after
  // normalisation), in every channel. Up to 10 tries to fit it, as torchvision does.
  static void eraseRect(float* img, int64_t C, int64_t H, int64_t W, uint64_t& r) {
    const double area = double(H * W);
    for (int attempt = 0; attempt < 10; attempt++) {
      double target = area * (0.02 + unit(r) * (0.4 - 0.02));
      double logRatio = std::log(0.3) + unit(r) * (std::log(1 / 0.3) - std::log(0.3));
      double ratio = std::exp(logRatio);
      int64_t h = int64_t(std::lround(std::sqrt(target * ratio)));
      int64_t w = int64_t(std::lround(std::sqrt(target / ratio)));
      if (h < 1 || w < 1 || h >= H || w >= W) continue;
      int64_t y0 = int64_t(unit(r) * double(H - h + 1)), x0 = int64_t(unit(r) * double(W - w + 1));
      y0 = std::min(y0, H - h);
      x0 = std::min(x0, W - w);
      for (int64_t c = 0; c < C; c++)
        for (int64_t y = y0; y < y0 + h; y++) std::fill_n(img + c * H * W + y * W + x0, w, 0.f);
      return;
    }
  }

  Batch make(int64_t b) {
    at::NoGradGuard ng;
    const int64_t n = count(), C = cfg.images.size(1), H = cfg.images.size(2), W = cfg.images.size(3);
    const int64_t begin = b * cfg.batch, end = std::min(n, begin + cfg.batch), B = end - begin;
    bool pinned = cfg.pin && cfg.device.is_cuda();
    auto fopt = at::TensorOptions().dtype(at::kFloat).pinned_memory(pinned);
    at::Tensor x = at::empty({B, C, H, W}, fopt);
    at::Tensor y = at::empty({B}, at::TensorOptions().dtype(at::kLong).pinned_memory(pinned));
    const uint8_t* src = cfg.images.data_ptr<uint8_t>();
    const int64_t* lab = cfg.labels.data_ptr<int64_t>();
    float* dst = x.data_ptr<float>();
    int64_t* ydst = y.data_ptr<int64_t>();
    std::vector<float> scale(C), shift(C), padv(C);
    for (int64_t c = 0; c < C; c++) {
      float m = cfg.mean.empty() ? 0.f : cfg.mean[cfg.mean.size() == 1 ? 0 : c];
      float s = cfg.std.empty() ? 1.f : cfg.std[cfg.std.size() == 1 ? 0 : c];
      scale[c] = 1.f / (255.f * s);
      shift[c] = -m / s;
      padv[c] = shift[c];  // a zero pixel, normalised
    }
    const int64_t plane = H * W;
    for (int64_t k = 0; k < B; k++) {
      int64_t idx = order[begin + k];
      uint64_t r = mix(mix(cfg.seed ^ 0xa0761d6478bd642fULL) ^ mix(epoch * 0x9e3779b97f4a7c15ULL + uint64_t(begin + k)));
      int64_t dy = 0, dx = 0;
      if (cfg.crop && cfg.pad > 0) {
        dy = int64_t(r % uint64_t(2 * cfg.pad + 1)) - cfg.pad;
        r = mix(r);
        dx = int64_t(r % uint64_t(2 * cfg.pad + 1)) - cfg.pad;
        r = mix(r);
      }
      bool flip = cfg.flip && (r & 1);
      r = mix(r);
      ydst[k] = lab[idx];
      const uint8_t* img = src + idx * C * plane;
      float* o = dst + k * C * plane;
      for (int64_t c = 0; c < C; c++) {
        const uint8_t* ip = img + c * plane;
        float* op = o + c * plane;
        for (int64_t yy = 0; yy < H; yy++) {
          int64_t sy = yy + dy;
          if (sy < 0 || sy >= H) {
            for (int64_t xx = 0; xx < W; xx++) op[yy * W + xx] = padv[c];
            continue;
          }
          for (int64_t xx = 0; xx < W; xx++) {
            int64_t ox = flip ? W - 1 - xx : xx;  // flip after the crop, as RandomCrop then RandomHorizontalFlip
            int64_t sx = ox + dx;
            op[yy * W + xx] = (sx < 0 || sx >= W) ? padv[c] : float(ip[sy * W + sx]) * scale[c] + shift[c];
          }
        }
      }
      if (cfg.erase > 0 && unit(r) < cfg.erase) eraseRect(o, C, H, W, r);
    }
    if (cfg.channelsLast) x = x.contiguous(at::MemoryFormat::ChannelsLast);
#if defined(RESIDUAL_CUDA)
    if (pinned && copyStreamEnabled()) {
      // Copy on a pool stream; this worker thread waits for it (not the JS thread), so the batch is on
      // the device before it is handed out and the consumer needs no event. record_stream: the memory
      // is used by the consumer's (default) stream, so the allocator does not hand it to the next copy
      // while the training kernels may still read it.
      const c10::DeviceIndex dev = cfg.device.has_index() ? cfg.device.index() : 0;
      c10::cuda::CUDAStream copy = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, dev);
      {
        c10::cuda::CUDAStreamGuard guard(copy);
        x = x.to(cfg.device, /*non_blocking=*/true);
        y = y.to(cfg.device, /*non_blocking=*/true);
      }
      copy.synchronize();
      c10::cuda::CUDAStream consumer = c10::cuda::getDefaultCUDAStream(dev);
      x.record_stream(consumer);
      y.record_stream(consumer);
      return {x, y};
    }
#endif
    if (!cfg.device.is_cpu()) {
      x = x.to(cfg.device, /*non_blocking=*/pinned);
      y = y.to(cfg.device, /*non_blocking=*/pinned);
    }
    return {x, y};
  }

  // Blocks until batch nextConsume is ready; false at the end of the epoch.
  bool take(Batch& out, std::string& err) {
    std::unique_lock<std::mutex> lk(mu);
    if (closed) {
      err = "the data loader was closed";
      return false;
    }
    if (nextConsume >= numBatches) return false;
    cv.wait(lk, [&] { return closed || !error.empty() || ready.count(nextConsume) || !running; });
    if (closed) {
      err = "the data loader was closed";
      return false;
    }
    if (!error.empty()) {
      err = error;
      return false;
    }
    auto it = ready.find(nextConsume);
    if (it == ready.end()) {
      err = "the data loader was stopped (a new epoch was started)";
      return false;
    }
    out = std::move(it->second);
    ready.erase(it);
    nextConsume++;
    lk.unlock();
    cv.notify_all();
    return true;
  }
};

static Loader* getLoader(Args& a, size_t i) {
  bool ok = false;
  if (i >= a.size() || !a.info[i].IsExternal() || napi_check_object_type_tag(a.env(), a.info[i], &kLoaderTag, &ok) != napi_ok || !ok)
    a.fail(i, "loader", "a native data loader");
  return a.info[i].As<Napi::External<Loader>>().Data();
}

static std::vector<float> floats(const Napi::Object& o, const char* key) {
  std::vector<float> v;
  Napi::Value x = o.Get(key);
  if (x.IsUndefined() || x.IsNull()) return v;
  if (!x.IsArray()) throw ArgError(std::string("option '") + key + "' must be an array of numbers");
  auto arr = x.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsNumber()) throw ArgError(std::string("option '") + key + "' must hold numbers");
    v.push_back(e.As<Napi::Number>().FloatValue());
  }
  return v;
}

static double optNum(const Napi::Object& o, const char* key, double d) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return d;
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
  if (!v.IsNumber()) throw ArgError(std::string("option '") + key + "' must be a number, got " + describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

static int64_t optInt(const Napi::Object& o, const char* key, int64_t d, int64_t lo = INT64_MIN) {
  int64_t v = exactInt(optNum(o, key, double(d)), std::string("option '") + key + "'");
  if (v < lo) throw RangeArgError(std::string("option '") + key + "' must be at least " + std::to_string(lo) + ", got " + std::to_string(v));
  return v;
}

// Every live loader of an environment, so that environment teardown (a worker thread exiting or being
// terminated) closes them: a pending next() then wakes instead of blocking a libuv thread forever.
static void closeAllLoaders(void* arg) {
  auto* d = static_cast<EnvData*>(arg);
  for (void* p : d->loaders) static_cast<Loader*>(p)->close();
}

// loaderCreate(images uint8 [N,C,H,W], labels int64 [N], options)
DEFN(loaderCreate) {
  at::Tensor images = a.T(0, "images"), labels = a.T(1, "labels");
  if (!a.has(2) || !a.info[2].IsObject()) a.fail(2, "options", "an object");
  auto o = a.info[2].As<Napi::Object>();
  if (images.dim() != 4 || images.scalar_type() != at::kByte)
    throw ArgError("images must be a uint8 tensor [N, C, H, W], got " + std::string(c10::toString(images.scalar_type())) + " " + c10::str(images.sizes()));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw ArgError("labels must be [N] with N = " + std::to_string(images.size(0)) + ", got " + c10::str(labels.sizes()));
  auto L = std::make_unique<Loader>();
  LoaderCfg& c = L->cfg;
  c.images = images.detach().to(at::kCPU).contiguous();
  c.labels = labels.detach().to(at::kCPU, at::kLong).contiguous();
  c.batch = optInt(o, "batchSize", 1);
  if (c.batch < 1) throw ArgError("batchSize must be at least 1");
  c.shuffle = optNum(o, "shuffle", 0) != 0;
  c.seed = uint64_t(optInt(o, "seed", 0, 0));
  c.dropLast = optNum(o, "dropLast", 0) != 0;
  c.mean = floats(o, "mean");
  c.std = floats(o, "std");
  int64_t C = images.size(1);
  for (auto* v : {&c.mean, &c.std})
    if (!v->empty() && v->size() != 1 && int64_t(v->size()) != C)
      throw ArgError("mean/std must have 1 or " + std::to_string(C) + " entries (one per channel)");
  for (float s : c.std)
    if (!(s > 0)) throw ArgError("std entries must be positive");
  c.pad = optInt(o, "cropPadding", 0, 0);
  c.crop = optNum(o, "randomCrop", 0) != 0;
  c.flip = optNum(o, "hflip", 0) != 0;
  c.erase = float(optNum(o, "randomErasing", 0));
  if (!(c.erase >= 0 && c.erase <= 1)) throw ArgError("randomErasing must be a probability in [0, 1]");
  c.channelsLast = optNum(o, "channelsLast", 0) != 0;
  c.prefetch = std::max<int64_t>(1, optInt(o, "prefetch", 2));
  c.workers = std::max<int64_t>(1, std::min<int64_t>(16, optInt(o, "workers", 1)));
  Napi::Value dv = o.Get("device");
  if (dv.IsString()) c.device = parseDevice(dv.As<Napi::String>().Utf8Value());
  c.pin = optNum(o, "pinMemory", c.device.is_cuda() ? 1 : 0) != 0;
  EnvData* d = envData(a.env());
  if (!d->loaderHook) {
    napi_add_env_cleanup_hook(a.env(), closeAllLoaders, d);
    d->loaderHook = true;
  }
  Loader* raw = L.release();
  d->loaders.insert(raw);
  auto ext = Napi::External<Loader>::New(a.env(), raw, [](Napi::Env env, Loader* p) {
    envData(env)->loaders.erase(p);
    delete p;
  });
  napi_type_tag_object(a.env(), ext, &kLoaderTag);
  return ext;
}

DEFN(loaderStart) {
  Loader* L = getLoader(a, 0);
  if (a.has(2)) {  // the sampler's indices for this epoch
    std::vector<int64_t> idx = a.IL(2, "indices");
    for (int64_t i : idx)
      if (i < 0 || i >= L->count()) throw RangeArgError("sampler index " + std::to_string(i) + " is outside the dataset (" + std::to_string(L->count()) + " items)");
    L->start(uint64_t(a.I(1, "epoch")), &idx);
  } else {
    L->start(uint64_t(a.I(1, "epoch")));
  }
  return Napi::Number::New(a.env(), double(L->numBatches));
}

DEFN(loaderLength) {
  Loader* L = getLoader(a, 0);
  const LoaderCfg& c = L->cfg;
  int64_t n = L->count();
  return Napi::Number::New(a.env(), double(c.dropLast ? n / c.batch : (n + c.batch - 1) / c.batch));
}

DEFN(loaderNextSync) { return takeBatchSync<Loader, Batch>(a.env(), getLoader(a, 0)); }

// Waits for the next batch on a libuv thread, so the event loop keeps running.
DEFN(loaderNext) {
  return NextBatchWorker<Loader, Batch, batchPair<Batch>>::start(a.env(), getLoader(a, 0), a.info[0]);
}

DEFN(loaderClose) {
  getLoader(a, 0)->close();
  return a.env().Undefined();
}

static const FnEntry kData[] = {
    ENTRY(loaderCreate),    // (images: Handle, labels: Handle, options: LoaderOptions) => NativeLoader
    ENTRY(loaderStart),     // (loader: NativeLoader, epoch: number, indices?: IntList | null) => number
    ENTRY(loaderLength),    // (loader: NativeLoader) => number
    ENTRY(loaderNextSync),  // (loader: NativeLoader) => NativeBatch | null
    ENTRY(loaderNext),      // (loader: NativeLoader) => Promise<NativeBatch | null>
    ENTRY(loaderClose),     // (loader: NativeLoader) => void
};

void initData(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(kData), std::end(kData)); }

}  // namespace residual
