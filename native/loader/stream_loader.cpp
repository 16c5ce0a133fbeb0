// The streaming loader (lib/data/stream.ts's StreamingDataLoader): images read, decoded and transformed
// on the loader's threads, never held in memory whole. ImageNet-layout folders (a list of paths) and
// WebDataset tar shards (read member by member). Memory stays bounded whatever the dataset size: the
// shuffle buffer holds at most a configured number of encoded samples and bytes, and at most
// `prefetch` batches wait or are in the making.
//
// Transforms follow torchvision: RandomResizedCrop (crop box sampled exactly as
// RandomResizedCrop.get_params) with antialiased bilinear resampling, horizontal flip, normalisation;
// for evaluation Resize(shorter side) then CenterCrop; or a plain resize. Only the crop region of a
// JPEG is decoded. The image work itself is the torch-free library in native/image/.
//
// An unreadable or corrupt file becomes an error naming its path: either the run stops with it (the
// next batch read fails with a BadFileError), or the sample is skipped and counted (loaderSkipped).
#include "loader/loader_base.h"

#include "image/codec.h"
#include "image/tar.h"
#include "image/transform.h"

namespace residual {

namespace {

using namespace residual::image;

struct StreamCfg : CommonCfg {
  bool tar = false;
  std::vector<std::string> files;    // folder: image paths
  std::vector<int64_t> labels;       // folder: labels
  std::vector<std::string> shards;   // webdataset: tar paths
  std::vector<int64_t> shardCounts;  // samples per shard (for the length), or empty
  int64_t rank = 0, world = 1;
  TransformSpec spec;  // the per-image transform (image/transform.h): size, crop, flip, channels, limits
  bool skipErrors = false;
  int64_t shuffleBuffer = 1000;            // samples held per worker for shuffling (webdataset)
  int64_t shuffleBufferBytes = 256 << 20;  // encoded bytes held in all shuffle buffers together
};

struct Encoded {
  std::vector<uint8_t> bytes;
  std::string name;  // for errors: path, or shard:member
  int64_t label = 0;
};

class StreamLoader final : public LoaderBase {
 public:
  explicit StreamLoader(StreamCfg c) : LoaderBase(c), cfg(std::move(c)) {}
  ~StreamLoader() override { close(); }

  // Batches in an epoch (for shards: from shardCounts; skipped samples can make it fewer).
  int64_t length(std::optional<uint64_t> ep) override {
    std::lock_guard<std::mutex> lk(mu);
    if (running_) return numBatches;
    Partition p = partition(ep.value_or(epoch));
    return p.batches;
  }

  int64_t drainSkipped(std::vector<std::pair<std::string, std::string>>& recent) override {
    std::lock_guard<std::mutex> lk(mu);
    recent.clear();
    recent.swap(skipped);
    return skippedCount;
  }

 protected:
  void plan(uint64_t ep, const std::vector<int64_t>* indices) override {
    if (indices)
      throw ArgError("a streaming loader takes no sampler indices: it partitions its data by rank itself (options rank and worldSize)");
    Partition p = partition(ep);
    rankIndex = std::move(p.rankIndex);
    workerShards = std::move(p.workerShards);
    numBatches = p.batches;
    const int64_t W = cfg.workers;
    queues.assign(size_t(W), {});
    done.assign(size_t(W), 0);
    cursor = 0;
    perWorkerPrefetch = std::max<int64_t>(1, (cfg.prefetch + W - 1) / W);
  }

  void clear() override {
    for (auto& q : queues) q.clear();
  }
  int64_t held() const override {
    int64_t n = 0;
    for (auto& q : queues) n += int64_t(q.size());
    return n;
  }

  // Round-robin over the workers' queues (a finished worker is passed over): the batch order is a
  // function of the seed, epoch and worker count only.
  Poll poll(Batch& out) override {
    const int64_t W = cfg.workers;
    for (;;) {
      bool allDone = true;
      for (int64_t k = 0; k < W; k++) {
        int64_t w = (cursor + k) % W;
        if (!queues[size_t(w)].empty() || !done[size_t(w)]) {
          allDone = false;
          break;
        }
      }
      if (allDone) return Poll::End;
      int64_t w = cursor % W;
      if (!queues[size_t(w)].empty()) {
        out = std::move(queues[size_t(w)].front());
        queues[size_t(w)].pop_front();
        cursor++;
        return Poll::Got;
      }
      if (!done[size_t(w)]) return Poll::Wait;
      cursor++;
    }
  }

  void exited(int64_t w) override { done[size_t(w)] = 1; }

  // uint8 batch -> float32, (x / 255 - mean) / std, on the consumer's side (on the device for CUDA):
  // the loader holds and copies 4x fewer bytes.
  void prepare(Batch& b) override {
    at::NoGradGuard ng;
    std::vector<float> scale, shift;
    normalisers(cfg, cfg.spec.channels, scale, shift);
    auto opt = at::TensorOptions().dtype(at::kFloat);
    at::Tensor sc = at::from_blob(scale.data(), {1, int64_t(scale.size()), 1, 1}, opt).to(b.x.device());
    at::Tensor sh = at::from_blob(shift.data(), {1, int64_t(shift.size()), 1, 1}, opt).to(b.x.device());
    b.x = b.x.to(at::kFloat).mul_(sc).add_(sh);
  }

  void work(int64_t w) override {
    if (cfg.tar)
      workTar(w);
    else
      workFolder(w);
  }

 private:
  int64_t batchesOf(int64_t n) const { return cfg.dropLast ? n / cfg.batch : (n + cfg.batch - 1) / cfg.batch; }

  struct Partition {
    std::vector<int64_t> rankIndex;
    std::vector<std::vector<std::string>> workerShards;
    int64_t batches = 0;
  };

  // The epoch's partition: a seeded permutation, then this rank's share; for shards, this rank's
  // shards then each worker's.
  Partition partition(uint64_t ep) const {
    Partition out;
    const int64_t W = cfg.workers;
    if (!cfg.tar) {
      const int64_t n = int64_t(cfg.files.size());
      std::vector<int64_t> order(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; i++) order[size_t(i)] = i;
      if (cfg.shuffle) {
        std::mt19937_64 rng(mix(cfg.seed) ^ mix(ep + 0x5851f42d4c957f2dULL));
        for (int64_t i = n - 1; i > 0; i--) std::swap(order[size_t(i)], order[size_t(rng() % uint64_t(i + 1))]);
      }
      // DistributedSampler (drop_last=False): pad by repeating from the start to a multiple of the
      // world size, then rank r takes positions r, r + world, ...
      const int64_t per = (n + cfg.world - 1) / cfg.world;
      for (int64_t k = 0; k < per; k++) out.rankIndex.push_back(order[size_t((cfg.rank + k * cfg.world) % n)]);
      out.batches = batchesOf(int64_t(out.rankIndex.size()));
    } else {
      std::vector<int64_t> order(cfg.shards.size());
      for (size_t i = 0; i < order.size(); i++) order[i] = int64_t(i);
      if (cfg.shuffle) {
        std::mt19937_64 rng(mix(cfg.seed ^ 0x7f4a7c15ULL) ^ mix(ep + 0x5851f42d4c957f2dULL));
        for (int64_t i = int64_t(order.size()) - 1; i > 0; i--) std::swap(order[size_t(i)], order[size_t(rng() % uint64_t(i + 1))]);
      }
      out.workerShards.assign(size_t(W), {});
      std::vector<int64_t> counts(size_t(W), 0);
      int64_t k = 0;
      for (size_t p = size_t(cfg.rank); p < order.size(); p += size_t(cfg.world), k++) {
        out.workerShards[size_t(k % W)].push_back(cfg.shards[size_t(order[p])]);
        if (!cfg.shardCounts.empty()) counts[size_t(k % W)] += cfg.shardCounts[size_t(order[p])];
      }
      for (int64_t w = 0; w < W; w++) out.batches += batchesOf(counts[size_t(w)]);
    }
    return out;
  }

  uint64_t sampleSeed(uint64_t worker, uint64_t k) const {
    return mix(mix(cfg.seed ^ 0xa0761d6478bd642fULL) ^ mix(epoch * 0x9e3779b97f4a7c15ULL + uint64_t(cfg.rank) * 0x632be59bd9b4e019ULL) ^
               mix(worker * 0x8cb92ba72f3d8dd7ULL + k));
  }

  // A failed sample: skipped and counted, or the run stops (returns false) with an error naming it
  // (a BadFileError; an OutOfMemoryError when memory ran out).
  bool failed(const std::string& name, const std::string& msg, bool oom = false) {
    std::lock_guard<std::mutex> lk(mu);
    if (cfg.skipErrors) {
      skippedCount++;
      skipped.emplace_back(name, msg);
      if (skipped.size() > 100) skipped.erase(skipped.begin());
      return true;
    }
    if (!error_)
      error_ = oom ? std::make_exception_ptr(KindError(ErrKind::OOM, name + ": " + msg))
                   : std::make_exception_ptr(ImageError(name + ": " + msg));
    cv.notify_all();
    return false;
  }

  // Waits until worker w may start a batch: the batches it holds (ready, plus the one it is about to
  // make) stay within its share of the prefetch, so the loader's memory is bounded by `prefetch`
  // batches whatever the dataset and timing. False if stopped.
  bool waitRoom(int64_t w) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return stop_ || int64_t(queues[size_t(w)].size()) < perWorkerPrefetch; });
    return !stop_;
  }

  // Queues a finished batch (its room was reserved by waitRoom). False if stopped.
  bool push(int64_t w, Batch&& b) {
    std::unique_lock<std::mutex> lk(mu);
    if (stop_) return false;
    queues[size_t(w)].push_back(std::move(b));
    lk.unlock();
    cv.notify_all();
    return true;
  }

  // Turns a filled batch buffer into the output (pinned, device copy).
  Batch seal(at::Tensor x, at::Tensor y, int64_t filled, bool pinned) {
    if (filled < x.size(0)) {
      x = x.narrow(0, 0, filled).clone();
      y = y.narrow(0, 0, filled).clone();
      if (pinned) {
        x = x.pin_memory();
        y = y.pin_memory();
      }
    }
    deliver(x, y, pinned);
    return {x, y};
  }

  std::pair<at::Tensor, at::Tensor> newBatch(int64_t B, bool pinned) const {
    auto fopt = at::TensorOptions().dtype(at::kByte).pinned_memory(pinned);
    return {at::empty({B, cfg.spec.channels, cfg.spec.outH, cfg.spec.outW}, fopt),
            at::empty({B}, at::TensorOptions().dtype(at::kLong).pinned_memory(pinned))};
  }

  void workFolder(int64_t w) {
    const bool pinned = cfg.pin && cfg.device.is_cuda();
    const int64_t n = int64_t(rankIndex.size()), plane = cfg.spec.channels * cfg.spec.outH * cfg.spec.outW;
    Image im;
    for (int64_t b = w; b < numBatches; b += cfg.workers) {
      const int64_t begin = b * cfg.batch, B = std::min(n, begin + cfg.batch) - begin;
      if (!waitRoom(w)) return;
      auto [x, y] = newBatch(B, pinned);
      uint8_t* xd = x.data_ptr<uint8_t>();
      int64_t* yd = y.data_ptr<int64_t>();
      int64_t filled = 0;
      for (int64_t k = 0; k < B; k++) {
        if (stopping()) return;
        const int64_t idx = rankIndex[size_t(begin + k)];
        const std::string& path = cfg.files[size_t(idx)];
        try {
          std::vector<uint8_t> bytes = readFile(path, cfg.spec.lim);
          transformImage(bytes.data(), bytes.size(), cfg.spec, sampleSeed(0, uint64_t(begin + k)), xd + filled * plane, im);
          yd[filled++] = cfg.labels[size_t(idx)];
        } catch (const ImageError& e) {
          if (!failed(path, e.what())) return;
        } catch (const std::bad_alloc&) {
          if (!failed(path, "out of memory", true)) return;
        }
      }
      if (filled == 0) continue;
      if (!push(w, seal(x, y, filled, pinned))) return;
    }
  }

  // Streams worker w's shards: samples (image + cls) -> shuffle buffer -> batches.
  void workTar(int64_t w) {
    const bool pinned = cfg.pin && cfg.device.is_cuda();
    const int64_t plane = cfg.spec.channels * cfg.spec.outH * cfg.spec.outW;
    std::mt19937_64 rng(mix(cfg.seed ^ 0x3c6ef372fe94f82bULL) ^ mix(epoch * 0x9e3779b97f4a7c15ULL + uint64_t(cfg.rank)) ^
                        mix(uint64_t(w) + 77));
    const int64_t bufN = cfg.shuffle ? std::max<int64_t>(1, cfg.shuffleBuffer) : 0;
    const int64_t bufBytes = std::max<int64_t>(1, cfg.shuffleBufferBytes / cfg.workers);
    std::vector<Encoded> buf;
    int64_t held = 0;
    at::Tensor x, y;
    int64_t filled = 0;
    uint64_t ordinal = 0;
    Image im;

    auto emit = [&](Encoded& s) -> bool {
      if (!x.defined()) {
        if (!waitRoom(w)) return false;
        std::tie(x, y) = newBatch(cfg.batch, pinned);
      }
      try {
        transformImage(s.bytes.data(), s.bytes.size(), cfg.spec, sampleSeed(uint64_t(w) + 1, ordinal++),
                       x.data_ptr<uint8_t>() + filled * plane, im);
        y.data_ptr<int64_t>()[filled++] = s.label;
      } catch (const ImageError& e) {
        if (!failed(s.name, e.what())) return false;
      } catch (const std::bad_alloc&) {
        if (!failed(s.name, "out of memory", true)) return false;
      }
      if (filled == cfg.batch) {
        Batch out = seal(x, y, filled, pinned);
        x = at::Tensor();
        y = at::Tensor();
        filled = 0;
        if (!push(w, std::move(out))) return false;
      }
      return true;
    };
    auto admit = [&](Encoded&& s) -> bool {
      if (!cfg.shuffle) return emit(s);
      // shuffle buffer: once full (count or bytes), a random held sample goes out for each one in
      held += int64_t(s.bytes.size());
      buf.push_back(std::move(s));
      while (int64_t(buf.size()) > bufN || (held > bufBytes && buf.size() > 1)) {
        size_t j = size_t(rng() % buf.size());
        std::swap(buf[j], buf.back());
        Encoded out = std::move(buf.back());
        buf.pop_back();
        held -= int64_t(out.bytes.size());
        if (!emit(out)) return false;
      }
      return true;
    };

    for (const std::string& shard : workerShards[size_t(w)]) {
      if (stopping()) return;
      try {
        SampleReader reader(shard, cfg.spec.lim);
        TarSample s;
        while (reader.next(s)) {
          if (stopping()) return;
          std::string name = shard + ":" + s.key;
          if (!s.error.empty()) {
            if (!failed(name, s.error)) return;
            continue;
          }
          Encoded e;
          e.name = name + "." + (isJpeg(s.image.data(), s.image.size()) ? "jpg" : "png");
          e.bytes = std::move(s.image);
          e.label = s.label;
          if (!admit(std::move(e))) return;
        }
      } catch (const ImageError& e) {
        // a corrupt or truncated shard: the rest of it is lost (a tar stream cannot be resynchronised)
        std::string msg = e.what();
        if (msg.compare(0, shard.size(), shard) == 0) {
          if (!failed(shard, msg.substr(std::min(msg.size(), shard.size() + 2)))) return;
        } else if (!failed(shard, msg)) {
          return;
        }
      }
    }
    // drain the shuffle buffer in random order
    while (!buf.empty()) {
      if (stopping()) return;
      size_t j = size_t(rng() % buf.size());
      std::swap(buf[j], buf.back());
      Encoded out = std::move(buf.back());
      buf.pop_back();
      if (!emit(out)) return;
    }
    if (filled > 0 && !cfg.dropLast) {
      if (!push(w, seal(x, y, filled, pinned))) return;
    }
  }

  const StreamCfg cfg;
  // Written by plan() (under mu, before the epoch's workers exist); read by the workers without it.
  std::vector<int64_t> rankIndex;                      // folder: this rank's sample indices, in order
  std::vector<std::vector<std::string>> workerShards;  // webdataset: each worker's shards, in order
  // Guarded by mu.
  std::vector<std::deque<Batch>> queues;
  std::vector<char> done;
  int64_t cursor = 0, perWorkerPrefetch = 1;
  int64_t skippedCount = 0;
  std::vector<std::pair<std::string, std::string>> skipped;  // the most recent, at most 100
};

}  // namespace

// streamCreate(options): { kind: 'folder' | 'webdataset', files, labels | shards, shardCounts, ... }
DEFN(streamCreate) {
  Options o(a.has(0) ? a.info[0] : a.env().Undefined(), "options");
  StreamCfg c;
  std::string kind = o.choice("kind", "", {"folder", "webdataset"});
  if (kind == "folder") {
    c.files = o.strings("files");
    c.labels = o.integers("labels", 0, kMaxLabel);
    if (c.files.size() != c.labels.size()) throw ArgError("files and labels must have the same length");
    if (c.files.empty()) throw ArgError("no files");
  } else if (kind == "webdataset") {
    c.tar = true;
    c.shards = o.strings("shards");
    if (c.shards.empty()) throw ArgError("no shards");
    c.shardCounts = o.integers("shardCounts", 0, Options::kMaxSafe);
    if (!c.shardCounts.empty() && c.shardCounts.size() != c.shards.size()) throw ArgError("shardCounts must have one entry per shard");
  } else {
    throw ArgError("option 'kind' must be 'folder' or 'webdataset'");
  }
  TransformSpec& t = c.spec;
  t.channels = int(o.integer("channels", 3, 1, 3));
  if (t.channels != 1 && t.channels != 3) throw RangeArgError("option 'channels' must be 1 or 3, got " + std::to_string(t.channels));
  static_cast<CommonCfg&>(c) = readCommon(o, t.channels, 1);
  c.rank = o.integer("rank", 0, 0, 1 << 20);
  c.world = o.integer("worldSize", 1, 1, 1 << 20);
  if (c.rank >= c.world)
    throw RangeArgError("need 0 <= rank < worldSize, got rank " + std::to_string(c.rank) + " of " + std::to_string(c.world));
  if (c.tar && int64_t(c.shards.size()) < c.world)
    throw ArgError("fewer shards (" + std::to_string(c.shards.size()) + ") than ranks (" + std::to_string(c.world) +
                   "): each rank reads whole shards");
  std::string kindName = o.choice("transform", "train", {"train", "eval", "resize"});
  t.kind = kindName == "train" ? Transform::Train : kindName == "eval" ? Transform::Eval : Transform::Resize;
  auto size = o.integers("size", 1, 8192);
  if (size.size() == 1) size.push_back(size[0]);
  if (size.size() == 2) {
    t.outH = size[0];
    t.outW = size[1];
  } else if (!size.empty()) {
    throw RangeArgError("option 'size' must have 1 or 2 entries ([height, width]), got " + std::to_string(size.size()));
  }
  t.resize = o.integer("resize", int64_t(double(std::max(t.outH, t.outW)) * 256.0 / 224.0), 1, kMaxSide);
  if (t.resize < std::max(t.outH, t.outW))
    throw RangeArgError("option 'resize' must be at least the crop size, got " + std::to_string(t.resize));
  for (const char* key : {"scale", "ratio"}) {
    auto v = o.numbers(key);
    if (v.empty()) continue;
    if (v.size() != 2)
      throw RangeArgError(std::string("option '") + key + "' must have 2 entries [lo, hi], got " + std::to_string(v.size()));
    (key[0] == 's' ? t.rrc.scaleLo : t.rrc.ratioLo) = v[0];
    (key[0] == 's' ? t.rrc.scaleHi : t.rrc.ratioHi) = v[1];
  }
  if (!(t.rrc.scaleLo > 0 && t.rrc.scaleLo <= t.rrc.scaleHi && t.rrc.scaleHi <= 1 && t.rrc.ratioLo > 0 && t.rrc.ratioLo <= t.rrc.ratioHi))
    throw RangeArgError("scale must be 0 < lo <= hi <= 1 and ratio 0 < lo <= hi");
  t.flip = o.flag("hflip", true);
  t.lim = readLimits(o);
  c.skipErrors = o.choice("onError", "stop", {"stop", "skip"}) == "skip";
  c.shuffleBuffer = o.integer("shuffleBuffer", 1000, 0, int64_t(1) << 30);
  c.shuffleBufferBytes = o.integer("shuffleBufferBytes", int64_t(256) << 20, 0, int64_t(1) << 40);
  return adoptLoader(a.env(), std::make_unique<StreamLoader>(std::move(c)));
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kStreamLoader[] = {
    ENTRY(streamCreate),  // (options: StreamCreateOptions) => NativeLoader
};
// clang-format on

void initStreamLoader(Napi::Env env, Napi::Object exports) {
  registerAll(env, exports, std::begin(kStreamLoader), std::end(kStreamLoader));
}

}  // namespace residual
