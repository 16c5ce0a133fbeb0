// The base of the native data loaders (memory_loader.cpp: tensors in memory; stream_loader.cpp: image
// folders and WebDataset shards): the worker pool of an epoch, the options both read, the hand-off of
// finished batches to JS, and one teardown. Worker threads run the derived loader's work() and never
// call into JS; JS reads batches in order with take(), on a libuv thread (loaderNext) or its own
// (loaderNextSync). One set of JS functions serves both kinds (loader_base.cpp): loaderStart,
// loaderLength, loaderNext, loaderNextSync, loaderStop (leave an epoch early: stop the workers, free
// the batches made ahead), loaderClose, loaderSkipped.
#pragma once
#include "residual.h"

#include "image/splitmix.h"
#include "options.h"

namespace residual {

struct Batch {
  at::Tensor x, y;
};

// The options both loaders read, with the same names, ranges and messages.
struct CommonCfg {
  int64_t batch = 1;
  int64_t workers = 1;
  int64_t prefetch = 2;  // batches made ahead, ready or in the making
  bool shuffle = false, dropLast = false;
  uint64_t seed = 0;
  std::vector<float> mean, std;  // per channel (or one for all), applied after scaling to [0, 1]
  at::Device device = at::Device(at::kCPU);
  bool pin = false;  // pinned host memory and a non-blocking copy (CUDA targets)
  bool channelsLast = false;
};

// batchSize, workers, prefetch, shuffle, seed, dropLast, mean, std (1 or `channels` entries, std > 0),
// device, pinMemory (default: on for CUDA), channelsLast.
CommonCfg readCommon(const Options& o, int64_t channels, int64_t defaultWorkers);

// Per-channel scale and shift that take a pixel v in 0..255 to (v / 255 - mean) / std.
void normalisers(const CommonCfg& c, int64_t channels, std::vector<float>& scale, std::vector<float>& shift);

class LoaderBase {
 public:
  // Derived destructors call close() first: the workers run the derived class's work().
  virtual ~LoaderBase() = default;

  // Starts an epoch (the last one's workers are stopped and its batches freed): `indices` is this
  // epoch's order from a sampler, where the loader takes one. Returns the epoch's batch count.
  int64_t start(uint64_t epoch, const std::vector<int64_t>* indices);
  // Batches in an epoch (`epoch`: for one not started yet).
  virtual int64_t length(std::optional<uint64_t> epoch) = 0;
  // The next batch, waiting for it: false at the end of the epoch, or with `err` set on a failure (a
  // worker's error, closed, stopped). Never throws.
  bool take(Batch& out, std::exception_ptr& err);
  // Leaves the epoch: stops its workers and frees the batches made ahead.
  void stop();
  // No more batches ever: wakes every waiter, stops the workers, frees the batches. Idempotent.
  void close();
  // Samples skipped so far, and the recent (path, message) pairs not reported before.
  virtual int64_t drainSkipped(std::vector<std::pair<std::string, std::string>>& recent);
  // For tests and diagnostics: is an epoch running (workers not stopped), and how many finished
  // batches the loader holds (made ahead, not yet taken).
  struct State {
    bool running, closed;
    int64_t held;
  };
  State state();

 protected:
  explicit LoaderBase(const CommonCfg& c) : common(c) {}
  enum class Poll { Got, End, Wait };

  // With `mu` held. plan(): this epoch's order and counters (numBatches; may throw, e.g. a bad sampler
  // index). clear(): frees the batches made ahead. poll(): the next batch if ready (Got), the end of the
  // epoch (End), or Wait. held(): the batches made ahead.
  virtual void plan(uint64_t epoch, const std::vector<int64_t>* indices) = 0;
  virtual void clear() = 0;
  virtual Poll poll(Batch& out) = 0;
  virtual int64_t held() const = 0;
  // Worker w's whole epoch (exceptions end the run: they become the error take() reports), and, with
  // `mu` held, what happens when it returns.
  virtual void work(int64_t w) = 0;
  virtual void exited(int64_t w) {}
  // After a batch is taken, on the taking thread (without `mu`).
  virtual void prepare(Batch& b) {}

  // For workers: has the epoch been stopped? Record the run's error (the first one wins).
  bool stopping();
  void fail(std::exception_ptr e);
  // channels-last and the copy to the target device (pinned: non-blocking; on CUDA through a side
  // stream the worker waits for, so the batch is on the device when it is handed out).
  void deliver(at::Tensor& x, at::Tensor& y, bool pinned) const;

  const CommonCfg common;
  std::mutex mu;
  std::condition_variable cv;
  // Guarded by mu; workers read what plan() wrote without it (written before they exist).
  uint64_t epoch = 0;
  int64_t numBatches = 0;
  bool stop_ = false;     // the epoch's workers should exit
  bool running_ = false;  // an epoch was started and not stopped
  bool started_ = false;  // start() was called once
  bool closed_ = false;
  std::exception_ptr error_;

 private:
  void halt();  // stops and joins the workers, then wakes any waiter
  void run(int64_t w);
  std::vector<std::thread> threads_;
};

// A new loader as the JS value that owns it: closed at environment teardown (a worker thread exiting
// or terminated: a pending loaderNext then wakes instead of blocking a libuv thread), deleted when
// collected.
Napi::Value adoptLoader(Napi::Env env, std::unique_ptr<LoaderBase> loader);

void initMemoryLoader(Napi::Env env, Napi::Object exports);
void initStreamLoader(Napi::Env env, Napi::Object exports);

}  // namespace residual
