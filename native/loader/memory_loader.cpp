// The loader over tensors in memory (lib/data/loader.ts's DataLoader): shuffling, batching, random
// crop with padding, horizontal flip, random erasing, normalisation to float32, pinned memory and the
// copy to CUDA, on worker threads that each take the next batch to make. Each sample's augmentation
// draws from its own splitmix stream seeded by (seed, epoch, position), so results are identical
// whatever the thread count or timing.
#include "loader/loader_base.h"

namespace residual {

namespace {

struct MemoryCfg : CommonCfg {
  at::Tensor images;  // uint8 [N, C, H, W], contiguous, CPU
  at::Tensor labels;  // int64 [N]
  int64_t pad = 0;
  bool crop = false;
  bool flip = false;
  float erase = 0;  // random erasing probability (Zhong et al. 2017)
};

class MemoryLoader final : public LoaderBase {
 public:
  explicit MemoryLoader(MemoryCfg c) : LoaderBase(c), cfg(std::move(c)) {}
  ~MemoryLoader() override { close(); }

  int64_t count() const { return cfg.images.size(0); }
  int64_t batchesOf(int64_t n) const { return cfg.dropLast ? n / cfg.batch : (n + cfg.batch - 1) / cfg.batch; }
  int64_t length(std::optional<uint64_t>) override { return batchesOf(count()); }

 protected:
  // `given`: this epoch's order (a sampler's indices, e.g. DistributedSampler), used as is.
  void plan(uint64_t ep, const std::vector<int64_t>* given) override {
    if (given)
      for (int64_t i : *given)
        if (i < 0 || i >= count())
          throw RangeArgError("sampler index " + std::to_string(i) + " is outside the dataset (" + std::to_string(count()) + " items)");
    const int64_t n = given ? int64_t(given->size()) : count();
    if (given) {
      order = *given;
    } else {
      order.resize(size_t(n));
      for (int64_t i = 0; i < n; i++) order[size_t(i)] = i;
    }
    if (cfg.shuffle && !given) {
      std::mt19937_64 rng(mix(cfg.seed) ^ mix(ep + 0x5851f42d4c957f2dULL));
      for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = int64_t(rng() % uint64_t(i + 1));
        std::swap(order[size_t(i)], order[size_t(j)]);
      }
    }
    numBatches = batchesOf(n);
    nextProduce = nextConsume = 0;
  }

  void clear() override { ready.clear(); }
  int64_t held() const override { return int64_t(ready.size()); }

  Poll poll(Batch& out) override {
    if (nextConsume >= numBatches) return Poll::End;
    auto it = ready.find(nextConsume);
    if (it == ready.end()) return Poll::Wait;
    out = std::move(it->second);
    ready.erase(it);
    nextConsume++;
    return Poll::Got;
  }

  void work(int64_t) override {
    for (;;) {
      int64_t b;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop_ || nextProduce >= numBatches || nextProduce - nextConsume < cfg.prefetch; });
        if (stop_ || nextProduce >= numBatches) return;
        b = nextProduce++;
      }
      Batch out = make(b);
      {
        std::lock_guard<std::mutex> lk(mu);
        if (stop_) return;  // the epoch was left: the batch is not wanted
        ready[b] = std::move(out);
      }
      cv.notify_all();
    }
  }

 private:
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
    const int64_t n = int64_t(order.size()), C = cfg.images.size(1), H = cfg.images.size(2), W = cfg.images.size(3);
    const int64_t begin = b * cfg.batch, end = std::min(n, begin + cfg.batch), B = end - begin;
    const bool pinned = cfg.pin && cfg.device.is_cuda();
    auto fopt = at::TensorOptions().dtype(at::kFloat).pinned_memory(pinned);
    at::Tensor x = at::empty({B, C, H, W}, fopt);
    at::Tensor y = at::empty({B}, at::TensorOptions().dtype(at::kLong).pinned_memory(pinned));
    const uint8_t* src = cfg.images.data_ptr<uint8_t>();
    const int64_t* lab = cfg.labels.data_ptr<int64_t>();
    float* dst = x.data_ptr<float>();
    int64_t* ydst = y.data_ptr<int64_t>();
    std::vector<float> scale, shift;
    normalisers(cfg, C, scale, shift);
    const std::vector<float>& padv = shift;  // a zero pixel, normalised
    const int64_t plane = H * W;
    for (int64_t k = 0; k < B; k++) {
      int64_t idx = order[size_t(begin + k)];
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
            for (int64_t xx = 0; xx < W; xx++) op[yy * W + xx] = padv[size_t(c)];
            continue;
          }
          for (int64_t xx = 0; xx < W; xx++) {
            int64_t ox = flip ? W - 1 - xx : xx;  // flip after the crop, as RandomCrop then RandomHorizontalFlip
            int64_t sx = ox + dx;
            op[yy * W + xx] = (sx < 0 || sx >= W) ? padv[size_t(c)] : float(ip[sy * W + sx]) * scale[size_t(c)] + shift[size_t(c)];
          }
        }
      }
      if (cfg.erase > 0 && unit(r) < cfg.erase) eraseRect(o, C, H, W, r);
    }
    deliver(x, y, pinned);
    return {x, y};
  }

  const MemoryCfg cfg;
  // Written by plan() (under mu, before the epoch's workers exist); read by the workers without it.
  std::vector<int64_t> order;
  // Guarded by mu.
  std::map<int64_t, Batch> ready;
  int64_t nextProduce = 0, nextConsume = 0;
};

}  // namespace

// loaderCreate(images uint8 [N,C,H,W], labels int64 [N], options)
DEFN(loaderCreate) {
  at::Tensor images = a.T(0, "images"), labels = a.T(1, "labels");
  Options o(a.has(2) ? a.info[2] : a.env().Undefined(), "options");
  if (images.dim() != 4 || images.scalar_type() != at::kByte)
    throw ArgError("images must be a uint8 tensor [N, C, H, W], got " + std::string(c10::toString(images.scalar_type())) + " " +
                   c10::str(images.sizes()));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw ArgError("labels must be [N] with N = " + std::to_string(images.size(0)) + ", got " + c10::str(labels.sizes()));
  MemoryCfg c;
  static_cast<CommonCfg&>(c) = readCommon(o, images.size(1), 1);
  c.pad = o.integer("cropPadding", 0, 0, int64_t(1) << 20);
  c.crop = o.flag("randomCrop", false);
  c.flip = o.flag("hflip", false);
  c.erase = float(o.number("randomErasing", 0, 0, 1, "a probability"));
  c.images = images.detach().to(at::kCPU).contiguous();
  c.labels = labels.detach().to(at::kCPU, at::kLong).contiguous();
  return adoptLoader(a.env(), std::make_unique<MemoryLoader>(std::move(c)));
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kMemoryLoader[] = {
    ENTRY(loaderCreate),  // (images: Handle, labels: Handle, options: LoaderOptions) => NativeLoader
};
// clang-format on

void initMemoryLoader(Napi::Env env, Napi::Object exports) {
  registerAll(env, exports, std::begin(kMemoryLoader), std::end(kMemoryLoader));
}

}  // namespace residual
