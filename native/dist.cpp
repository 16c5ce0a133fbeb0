// Data-parallel training on PyTorch's own distributed engine, c10d, as libtorch ships it: the
// TCPStore rendezvous, ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA builds with RESIDUAL_NCCL),
// the DDP Reducer (bucketed gradient all-reduce while backward runs), broadcast_coalesced and
// verify_params_across_processes. No collective is implemented here: every one is c10d's.
//
// The store and process group are laid out exactly as torch.distributed.init_process_group lays them
// out (a TCPStore hosted by rank 0, or by torchrun's agent when TORCHELASTIC_USE_AGENT_STORE=True;
// prefixes "default_pg" / "0/" / "<device>/"), so a Node rank can join a group with Python ranks.
//
// Gloo's headers come from outside the wheel (Debian's libgloo-dev) and are used header-only: this
// file never touches a gloo object's internals (devices are made by libtorch's exported factories
// and held through shared_ptr), and the ProcessGroupGloo object is built in a buffer with a guard
// zone, checked after construction, so a layout mismatch with the library is an error, not silent
// memory corruption.
#include "residual.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#if defined(RESIDUAL_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#if defined(RESIDUAL_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

namespace residual {

#if defined(RESIDUAL_GLOO)
static_assert(sizeof(std::shared_ptr<::gloo::transport::Device>) == 2 * sizeof(void*),
              "gloo devices must be held through a plain shared_ptr (opaque to this file)");
#endif

// Whether this build has the 'gloo' backend (buildInfo().gloo): native/dist.cmake builds it only when
// gloo's headers are found.
bool distHasGloo() {
#if defined(RESIDUAL_GLOO)
  return true;
#else
  return false;
#endif
}

namespace {

// The one default process group of this process (like torch.distributed's WORLD). Deliberately never
// destroyed by a static destructor: gloo's threads may still run at exit.
struct DistState {
  std::mutex mu;
  c10::intrusive_ptr<c10d::Store> store;  // the TCPStore (client or server)
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::string backendName;
  int rank = -1, size = 0;
  std::chrono::milliseconds timeout{0};
};
DistState& state() {
  static DistState* s = new DistState();
  return *s;
}

c10::intrusive_ptr<c10d::ProcessGroup> currentPg(const char* what) {
  auto& S = state();
  std::lock_guard<std::mutex> lk(S.mu);
  if (!S.pg) throw std::runtime_error(std::string(what) + ": no process group (call dist.initProcessGroup() first)");
  return S.pg;
}

std::string rankTag() {
  auto& S = state();
  return S.rank >= 0 ? "[rank " + std::to_string(S.rank) + "] " : std::string();
}

std::vector<std::string> splitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

#if defined(RESIDUAL_GLOO)
// ProcessGroupGloo in a buffer with a guard zone after the size our header gives it: the library's
// constructor writing past it means the layouts disagree, refused before the object is used.
c10::intrusive_ptr<c10d::ProcessGroupGloo> makeGloo(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                   const c10::intrusive_ptr<c10d::ProcessGroupGloo::Options>& opts) {
  constexpr size_t kGuard = 4096;
  constexpr unsigned char kFill = 0xA5;
  const size_t n = sizeof(c10d::ProcessGroupGloo);
  void* mem = ::operator new(n + kGuard);
  std::memset(static_cast<char*>(mem) + n, kFill, kGuard);
  c10d::ProcessGroupGloo* raw;
  try {
    raw = new (mem) c10d::ProcessGroupGloo(store, rank, size, opts);
  } catch (...) {
    ::operator delete(mem);
    throw;
  }
  const unsigned char* g = static_cast<const unsigned char*>(mem) + n;
  for (size_t i = 0; i < kGuard; i++) {
    if (g[i] != kFill) {
      // The object is larger in the library than in the headers we compiled against: unusable. It is
      // leaked on purpose (destroying it could corrupt memory further).
      throw std::runtime_error("ProcessGroupGloo's layout in libtorch differs from the headers this addon was built with "
                               "(gloo headers from another version?): rebuild against matching headers");
    }
  }
  return c10::intrusive_ptr<c10d::ProcessGroupGloo>::unsafe_steal_from_new(raw);
}
#endif

#if !defined(RESIDUAL_GLOO)
const char* const kNoGloo =
    "backend 'gloo' is not in this build of the addon: it was built without gloo's headers. Install them "
    "(Debian/Ubuntu: apt-get install libgloo-dev; or set GLOO_INCLUDE_DIR to a folder with gloo/algorithm.h) "
    "and build the addon again (npm install in a checkout, or npx residual setup --build-from-source)";
#endif

struct InitCfg {
  std::string backend, addr, groupName = "0";
  int rank = 0, size = 1;
  int port = 29500;
  bool hostStore = true, agentStore = false;
  std::chrono::milliseconds timeout{1800000};
  std::vector<std::string> ifnames;
  int deviceIndex = 0;
};

// Everything blocking (connect, wait for all workers, gloo's full mesh) runs here, on a libuv thread.
void doInit(const InitCfg& c) {
  auto& S = state();
  {
    std::lock_guard<std::mutex> lk(S.mu);
    if (S.pg) throw std::runtime_error("a process group is already initialised (destroyProcessGroup() first)");
  }
#if !defined(RESIDUAL_NCCL)
  if (c.backend == "nccl") throw std::runtime_error("backend 'nccl' needs the CUDA build of the addon (this one is " RESIDUAL_VARIANT "): use 'gloo'");
#endif
  if (c.backend != "gloo" && c.backend != "nccl") throw std::runtime_error("unknown backend '" + c.backend + "' (gloo or nccl)");
#if !defined(RESIDUAL_GLOO)
  if (c.backend == "gloo") throw std::runtime_error(kNoGloo);
#endif
  c10d::TCPStoreOptions so;
  so.port = uint16_t(c.port);
  so.isServer = c.hostStore && !c.agentStore;
  so.numWorkers = size_t(c.size);
  so.waitWorkers = true;
  so.timeout = c.timeout;
  so.multiTenant = !c.agentStore;
  so.useLibUV = false;  // the libuv backend would bind to Node's own libuv
  auto tcp = c10::make_intrusive<c10d::TCPStore>(c.addr, so);
  tcp->setTimeout(c.timeout);
  c10::intrusive_ptr<c10d::Store> base = c10::make_intrusive<c10d::PrefixStore>("default_pg", tcp);
  auto groupStore = c10::make_intrusive<c10d::PrefixStore>(c.groupName + "/", base);
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(groupStore, c.rank, c.size);
  c10::intrusive_ptr<c10d::Backend> backend;
  if (c.backend == "gloo") {
#if defined(RESIDUAL_GLOO)
    pg->setDefaultBackend(c10d::ProcessGroup::GLOO);
    auto backendStore = c10::make_intrusive<c10d::PrefixStore>("cpu/", groupStore);
    auto opts = c10d::ProcessGroupGloo::Options::create(c.timeout);
    bool lazy = c10d::getDefaultGlooLazyInit();
    if (!c.ifnames.empty()) {
      for (auto& i : c.ifnames) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(i, lazy));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice(lazy));
    }
    opts->threads = int(opts->devices.size()) * 2;
    auto gloo = makeGloo(backendStore, c.rank, c.size, opts);
    gloo->setSequenceNumberForGroup();
    backend = gloo;
    pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::GLOO, backend);
    pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::GLOO, backend);
#else
    throw std::runtime_error(kNoGloo);
#endif
  } else if (c.backend == "nccl") {
#if defined(RESIDUAL_NCCL)
    pg->setDefaultBackend(c10d::ProcessGroup::NCCL);
    auto backendStore = c10::make_intrusive<c10d::PrefixStore>("cuda/", groupStore);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = c.timeout;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(backendStore, c.rank, c.size, opts);
    nccl->setSequenceNumberForGroup();
    backend = nccl;
    pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::NCCL, backend);
#else
    throw std::runtime_error("backend 'nccl' needs the CUDA build of the addon (this one is " RESIDUAL_VARIANT ")");
#endif
  } else {
    throw std::runtime_error("unknown backend '" + c.backend + "' (gloo or nccl)");
  }
  pg->setGroupName(c.groupName);
  std::lock_guard<std::mutex> lk(S.mu);
  S.store = tcp;
  S.pg = pg;
  S.backend = backend;
  S.backendName = c.backend;
  S.rank = c.rank;
  S.size = c.size;
  S.timeout = c.timeout;
}

std::string errText(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const c10::Error& x) {
    std::string m = x.what_without_backtrace();
    auto pos = m.find("\nException raised from");
    if (pos != std::string::npos) m = m.substr(0, pos);
    return m;
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown error";
  }
}

// Runs `job` on a libuv thread and settles a Promise; `done` builds the resolved value on the JS thread.
class DistWorker : public Napi::AsyncWorker {
 public:
  DistWorker(Napi::Env env, std::string what, std::function<void()> job, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env), what_(std::move(what)), job_(std::move(job)), done_(std::move(done)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  void Execute() override {
    try {
      job_();
    } catch (...) {
      SetError(errText(std::current_exception()));
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      Napi::HandleScope hs(env);
      deferred_.Resolve(done_ ? done_(env) : env.Undefined());
    } catch (const std::exception& e) {
      try {
        deferred_.Reject(Napi::Error::New(env, what_ + ": " + e.what()).Value());
      } catch (...) {
      }
    } catch (...) {
    }
  }
  void OnError(const Napi::Error& e) override {
    try {
      auto err = Napi::Error::New(Env(), rankTag() + what_ + ": " + e.Message());
      err.Set("code", Napi::String::New(Env(), "ERR_RESIDUAL_DIST"));
      deferred_.Reject(err.Value());
    } catch (...) {
    }
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 private:
  std::string what_;
  std::function<void()> job_;
  std::function<Napi::Value(Napi::Env)> done_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value runAsync(Napi::Env env, const std::string& what, std::function<void()> job,
                     std::function<Napi::Value(Napi::Env)> done = nullptr) {
  auto* w = new DistWorker(env, what, std::move(job), std::move(done));
  auto p = w->promise();
  w->Queue();
  return p;
}

void waitWork(const c10::intrusive_ptr<c10d::Work>& work) {
  auto& S = state();
  work->wait(S.timeout);
}

double optNum(const Napi::Object& o, const char* k, double d) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined() || v.IsNull()) return d;
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  if (!v.IsNumber()) throw ArgError(std::string("option '") + k + "' must be a number, got " + describe(v));
  return v.As<Napi::Number>().DoubleValue();
}
std::string optStr(const Napi::Object& o, const char* k, const std::string& d) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined() || v.IsNull()) return d;
  if (!v.IsString()) throw ArgError(std::string("option '") + k + "' must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}

c10d::ReduceOp reduceOp(const std::string& s) {
  if (s == "sum") return c10d::ReduceOp::SUM;
  if (s == "product") return c10d::ReduceOp::PRODUCT;
  if (s == "min") return c10d::ReduceOp::MIN;
  if (s == "max") return c10d::ReduceOp::MAX;
  throw ArgError("unknown reduce op '" + s + "' (sum, product, min, max)");
}

}  // namespace

// distInit({backend, rank, worldSize, masterAddr, masterPort, timeoutMs, hostStore, agentStore,
// ifnames: string (comma-separated), groupName}) -> Promise<void>
DEFN(distInit) {
  if (!a.has(0) || !a.info[0].IsObject()) a.fail(0, "options", "an object");
  auto o = a.info[0].As<Napi::Object>();
  InitCfg c;
  c.backend = optStr(o, "backend", "gloo");
  c.rank = int(optNum(o, "rank", 0));
  c.size = int(optNum(o, "worldSize", 1));
  c.addr = optStr(o, "masterAddr", "127.0.0.1");
  c.port = int(optNum(o, "masterPort", 29500));
  double ms = optNum(o, "timeoutMs", 1800000);
  c.hostStore = optNum(o, "hostStore", c.rank == 0) != 0;
  c.agentStore = optNum(o, "agentStore", 0) != 0;
  c.ifnames = splitComma(optStr(o, "ifnames", ""));
  c.groupName = optStr(o, "groupName", "0");
  if (c.size < 1) throw RangeArgError("worldSize must be >= 1, got " + std::to_string(c.size));
  if (c.rank < 0 || c.rank >= c.size) throw RangeArgError("rank must be in [0, worldSize), got " + std::to_string(c.rank));
  if (c.port < 0 || c.port > 65535) throw RangeArgError("masterPort must be in [0, 65535], got " + std::to_string(c.port));
  if (!(ms >= 1)) throw RangeArgError("timeoutMs must be >= 1");
  c.timeout = std::chrono::milliseconds(int64_t(ms));
  return runAsync(a.env(), "initProcessGroup", [c] { doInit(c); });
}

// distInfo() -> {rank, worldSize, backend} | null
DEFN(distInfo) {
  auto& S = state();
  std::lock_guard<std::mutex> lk(S.mu);
  if (!S.pg) return a.env().Null();
  auto o = Napi::Object::New(a.env());
  o.Set("rank", S.rank);
  o.Set("worldSize", S.size);
  o.Set("backend", S.backendName);
  o.Set("timeoutMs", double(S.timeout.count()));
  return o;
}

// distDestroy(): drops the process group (gloo's threads are joined) and the store.
DEFN(distDestroy) {
  auto& S = state();
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  c10::intrusive_ptr<c10d::Backend> backend;
  c10::intrusive_ptr<c10d::Store> store;
  {
    std::lock_guard<std::mutex> lk(S.mu);
    pg = std::move(S.pg);
    backend = std::move(S.backend);
    store = std::move(S.store);
    S.rank = -1;
    S.size = 0;
    S.backendName.clear();
  }
  if (pg) pg->shutdown();
  return a.env().Undefined();
}

// distAllReduce(tensors[], op) -> Promise<void>: each tensor reduced in place across the ranks.
DEFN(distAllReduce) {
  auto ts = a.TL(0, "tensors");
  c10d::AllreduceOptions opts;
  opts.reduceOp = reduceOp(a.has(1) ? a.Str(1, "op") : std::string("sum"));
  auto pg = currentPg("allReduce");
  // One collective per tensor (c10d's list form means one tensor per local device, reduced together).
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& t : ts) {
    std::vector<at::Tensor> one{t};
    works.push_back(pg->allreduce(one, opts));
  }
  return runAsync(a.env(), "allReduce", [works, ts] {
    for (auto& w : works) waitWork(w);
  });
}

// distBroadcast(tensors[], src) -> Promise<void>
DEFN(distBroadcast) {
  auto ts = a.TL(0, "tensors");
  int64_t src = a.I(1, "src");
  auto pg = currentPg("broadcast");
  if (src < 0 || src >= pg->getSize()) throw RangeArgError("src must be a rank in [0, " + std::to_string(pg->getSize()) + "), got " + std::to_string(src));
  c10d::BroadcastOptions opts;
  opts.rootRank = src;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& t : ts) {
    std::vector<at::Tensor> one{t};
    works.push_back(pg->broadcast(one, opts));
  }
  return runAsync(a.env(), "broadcast", [works, ts] {
    for (auto& w : works) waitWork(w);
  });
}

// distAllGather(tensor) -> Promise<Tensor[]> (one tensor per rank, in rank order)
DEFN(distAllGather) {
  at::Tensor t = a.T(0, "tensor");
  auto pg = currentPg("allGather");
  std::vector<at::Tensor> in{t.contiguous()};
  auto outs = std::make_shared<std::vector<std::vector<at::Tensor>>>(1);
  for (int r = 0; r < pg->getSize(); r++) (*outs)[0].push_back(at::empty_like(in[0]));
  auto work = pg->allgather(*outs, in);
  return runAsync(a.env(), "allGather", [work, outs, in] { waitWork(work); },
                  [outs](Napi::Env env) { return wrap(env, (*outs)[0]); });
}

// distBarrier() -> Promise<void>
DEFN(distBarrier) {
  auto pg = currentPg("barrier");
  c10d::BarrierOptions opts;
  auto work = pg->barrier(opts);
  return runAsync(a.env(), "barrier", [work] { waitWork(work); });
}

// distSamplerPerm(n, seed) -> int64 Tensor: torch.randperm(n, generator=torch.Generator().manual_seed(seed))
DEFN(distSamplerPerm) {
  int64_t n = a.I(0, "n");
  int64_t seed = a.I(1, "seed");
  if (n < 0) throw RangeArgError("n must be >= 0");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t(seed));
  return wrap(a.env(), at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)));
}

// ---- DistributedDataParallel: c10d's Reducer -----------------------------------------------------

namespace {
const napi_type_tag kDdpTag = {0x7d1c2a3b4e5f6071ULL, 0x8192a3b4c5d6e7f8ULL};
constexpr size_t kBroadcastBucket = size_t(250) * 1024 * 1024;  // DDP's broadcast_bucket_size

struct Ddp {
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::unique_ptr<c10d::Reducer> reducer;
  std::vector<at::Tensor> params, buffers;
  bool findUnused = false;
  ~Ddp() {
    try {
      reducer.reset();
    } catch (...) {
    }
  }
};

Ddp* getDdp(Args& a, size_t i) {
  bool ok = false;
  if (i >= a.size() || !a.info[i].IsExternal() || napi_check_object_type_tag(a.env(), a.info[i], &kDdpTag, &ok) != napi_ok || !ok)
    a.fail(i, "ddp", "a native DDP handle");
  Ddp* d = a.info[i].As<Napi::External<Ddp>>().Data();
  if (!d->reducer) throw std::runtime_error("DistributedDataParallel: used after destroy()");
  return d;
}

void broadcastStates(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, const std::vector<at::Tensor>& ts) {
  if (ts.empty()) return;
  at::NoGradGuard ng;
  std::vector<at::Tensor> det;
  det.reserve(ts.size());
  for (auto& t : ts) det.push_back(t.detach());
  c10d::broadcast_coalesced(pg, det, kBroadcastBucket, 0);
}
}  // namespace

// ddpCreate(params[], states[], buffers[], {bucketCapBytes, firstBucketBytes, findUnusedParameters})
// -> handle. params: the trainable parameters (the Reducer's); states: what rank 0 broadcasts at the
// start (every parameter, then the buffers when broadcastBuffers: torch's _sync_module_states);
// buffers: broadcast before each forward when asked. Collective (every rank calls it): verifies the replicas agree,
// broadcasts rank 0's parameters (and buffers) and builds the Reducer, as torch's DDP constructor does.
DEFN(ddpCreate) {
  auto params = a.TL(0, "params");
  auto states = a.TL(1, "states");
  auto buffers = a.TL(2, "buffers");
  if (!a.has(3) || !a.info[3].IsObject()) a.fail(3, "options", "an object");
  auto o = a.info[3].As<Napi::Object>();
  int64_t cap = int64_t(optNum(o, "bucketCapBytes", 25.0 * 1024 * 1024));
  int64_t first = int64_t(optNum(o, "firstBucketBytes", 1024.0 * 1024));
  bool findUnused = optNum(o, "findUnusedParameters", 0) != 0;
  if (params.empty()) throw ArgError("DistributedDataParallel: the model has no parameters");
  for (size_t i = 0; i < params.size(); i++)
    if (!params[i].requires_grad()) throw ArgError("DistributedDataParallel: parameter " + std::to_string(i) + " does not require grad");
  auto pg = currentPg("DistributedDataParallel");
  c10d::verify_params_across_processes(pg, params, std::nullopt);
  broadcastStates(pg, states);
  std::vector<size_t> limits;
  if (!findUnused) limits = {std::numeric_limits<size_t>::max()};
  else if (first < cap) limits = {size_t(first), size_t(cap)};
  else limits = {size_t(cap)};
  std::vector<bool> sparse(params.size(), false);
  auto [buckets, perBucket] = c10d::compute_bucket_assignment_by_size(params, limits, sparse);
  (void)perBucket;
  std::reverse(buckets.begin(), buckets.end());
  auto d = std::make_unique<Ddp>();
  d->pg = pg;
  d->params = params;
  d->buffers = buffers;
  d->findUnused = findUnused;
  d->reducer = std::make_unique<c10d::Reducer>(params, buckets, pg, sparse, cap, findUnused,
                                               /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{}, first,
                                               /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
                                               std::vector<int64_t>{});
  auto ext = Napi::External<Ddp>::New(a.env(), d.release(), [](Napi::Env, Ddp* p) { delete p; });
  napi_type_tag_object(a.env(), ext, &kDdpTag);
  return ext;
}

// ddpPreForward(ddp, gradEnabled, syncBuffers): the Reducer's forward bookkeeping, the bucket rebuild
// after the first iteration, then rank 0's buffers (torch's DDP._pre_forward, in its order).
DEFN(ddpPreForward) {
  Ddp* d = getDdp(a, 0);
  bool grad = a.B(1, "gradEnabled");
  bool sync = a.B(2, "syncBuffers");
  if (grad) {
    d->reducer->prepare_for_forward();
    d->reducer->rebuild_buckets();
  }
  if (sync) broadcastStates(d->pg, d->buffers);
  return a.env().Undefined();
}

// ddpPostForward(ddp, outputs[]): arms the Reducer's autograd hooks for the coming backward.
DEFN(ddpPostForward) {
  Ddp* d = getDdp(a, 0);
  auto outs = a.TL(1, "outputs");
  d->reducer->prepare_for_backward(d->findUnused ? outs : std::vector<at::Tensor>{});
  return a.env().Undefined();
}

// ddpSyncBuffers(ddp): broadcasts rank 0's buffers now.
DEFN(ddpSyncBuffers) {
  Ddp* d = getDdp(a, 0);
  broadcastStates(d->pg, d->buffers);
  return a.env().Undefined();
}

// ddpDestroy(ddp): removes the Reducer's hooks.
DEFN(ddpDestroy) {
  bool ok = false;
  if (!a.has(0) || !a.info[0].IsExternal() || napi_check_object_type_tag(a.env(), a.info[0], &kDdpTag, &ok) != napi_ok || !ok)
    a.fail(0, "ddp", "a native DDP handle");
  Ddp* d = a.info[0].As<Napi::External<Ddp>>().Data();
  d->reducer.reset();
  return a.env().Undefined();
}

// ---- SyncBatchNorm: batch statistics all-reduced over the group, in forward and in backward -------

namespace {
void allReduceNow(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, at::Tensor& t) {
  std::vector<at::Tensor> v{t};
  waitWork(pg->allreduce(v));
}

struct SyncBNFn : public torch::autograd::Function<SyncBNFn> {
  // x [N, C, ...]; weight/bias may be undefined (affine=false); running stats updated when defined.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor runningMean, at::Tensor runningVar, double momentum, double eps) {
    auto pg = currentPg("SyncBatchNorm");
    int64_t C = x.size(1);
    std::vector<int64_t> dims{0};
    for (int64_t k = 2; k < x.dim(); k++) dims.push_back(k);
    at::Tensor xd = x.to(at::kDouble);
    at::Tensor stats = at::cat({xd.sum(dims), (xd * xd).sum(dims),
                                at::full({1}, double(x.numel() / std::max<int64_t>(C, 1)), xd.options())});
    allReduceNow(pg, stats);
    double total = stats[2 * C].item<double>();
    if (total <= 1) throw std::runtime_error("SyncBatchNorm: expected more than 1 value per channel across the group when training");
    at::Tensor mean = stats.slice(0, 0, C) / total;
    at::Tensor var = (stats.slice(0, C, 2 * C) / total - mean * mean).clamp_min(0);
    at::Tensor invstd = (var + eps).rsqrt();
    if (runningMean.defined()) {
      at::NoGradGuard ng;
      runningMean.mul_(1 - momentum).add_(mean.to(runningMean.scalar_type()), momentum);
      runningVar.mul_(1 - momentum).add_((var * (total / (total - 1))).to(runningVar.scalar_type()), momentum);
    }
    std::vector<int64_t> shape(x.dim(), 1);
    shape[1] = C;
    at::Tensor scale = weight.defined() ? invstd * weight.to(at::kDouble) : invstd;
    at::Tensor shift = -mean * scale;
    if (bias.defined()) shift = shift + bias.to(at::kDouble);
    at::Tensor y = x * scale.to(x.scalar_type()).view(shape) + shift.to(x.scalar_type()).view(shape);
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["total"] = total;
    ctx->saved_data["affine"] = weight.defined();
    ctx->saved_data["hasBias"] = bias.defined();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list gys) {
    auto pg = currentPg("SyncBatchNorm backward");
    auto saved = ctx->get_saved_variables();
    at::Tensor x = saved[0], weight = saved[1], mean = saved[2], invstd = saved[3];
    double total = ctx->saved_data["total"].toDouble();
    bool affine = ctx->saved_data["affine"].toBool();
    bool hasBias = ctx->saved_data["hasBias"].toBool();
    at::Tensor gy = gys[0].to(at::kDouble);
    int64_t C = x.size(1);
    std::vector<int64_t> dims{0};
    for (int64_t k = 2; k < x.dim(); k++) dims.push_back(k);
    std::vector<int64_t> shape(x.dim(), 1);
    shape[1] = C;
    at::Tensor xmu = x.to(at::kDouble) - mean.view(shape);
    at::Tensor sumDy = gy.sum(dims), sumDyXmu = (gy * xmu).sum(dims);
    at::Tensor gw = affine ? (sumDyXmu * invstd).to(weight.scalar_type()) : at::Tensor();
    at::Tensor gb = hasBias ? sumDy.to(x.scalar_type()) : at::Tensor();
    at::Tensor red = at::cat({sumDy, sumDyXmu});
    allReduceNow(pg, red);
    at::Tensor meanDy = red.slice(0, 0, C) / total, meanDyXmu = red.slice(0, C, 2 * C) / total;
    at::Tensor w = affine ? weight.to(at::kDouble) : at::ones_like(invstd);
    at::Tensor gx = (gy - meanDy.view(shape) - xmu * (invstd * invstd * meanDyXmu).view(shape)) * (invstd * w).view(shape);
    return {gx.to(x.scalar_type()), gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

// distSyncBatchNorm(x, weight|null, bias|null, runningMean|null, runningVar|null, momentum, eps) -> Tensor
DEFN(distSyncBatchNorm) {
  at::Tensor x = a.T(0, "input");
  at::Tensor w = a.OT(1, "weight").value_or(at::Tensor());
  at::Tensor b = a.OT(2, "bias").value_or(at::Tensor());
  at::Tensor rm = a.OT(3, "runningMean").value_or(at::Tensor());
  at::Tensor rv = a.OT(4, "runningVar").value_or(at::Tensor());
  double momentum = a.D(5, "momentum");
  double eps = a.D(6, "eps");
  if (x.dim() < 2) throw ArgError("SyncBatchNorm: input must have at least 2 dimensions, got " + std::to_string(x.dim()));
  if (rm.defined() != rv.defined()) throw ArgError("SyncBatchNorm: runningMean and runningVar go together");
  return wrap(a.env(), SyncBNFn::apply(x, w, b, rm, rv, momentum, eps));
}

// ---- parameters moved or re-laid in place -----------------------------------------------------

// tensorSetData(t, src): t takes src's data (device, dtype, layout) and stays the same tensor object,
// as PyTorch's `param.data = ...` in Module._apply: an optimizer or DDP Reducer made earlier still holds
// it (its autograd identity and grad accumulator are kept). The grad, if any, is dropped (the caller
// moves it).
DEFN(tensorSetData) {
  at::Tensor t = a.T(0, "tensor");
  at::Tensor src = a.T(1, "source");
  if (!t.is_leaf()) throw ArgError("tensorSetData: only leaf tensors (parameters and buffers) can take new data");
  if (src.sizes() != t.sizes()) throw ArgError("tensorSetData: the source has shape " + c10::str(src.sizes()) + ", the tensor " + c10::str(t.sizes()));
  at::NoGradGuard ng;
  t.mutable_grad().reset();
  t.set_data(src.detach());
  return a.env().Undefined();
}

static const FnEntry kDist[] = {
    ENTRY(distInit),           // (options: DistInitOptions) => Promise<void>
    ENTRY(distInfo),           // () => DistInfo | null
    ENTRY(distDestroy),        // () => void
    ENTRY(distAllReduce),      // (tensors: readonly Handle[], op?: string | null) => Promise<void>
    ENTRY(distBroadcast),      // (tensors: readonly Handle[], src: number) => Promise<void>
    ENTRY(distAllGather),      // (tensor: Handle) => Promise<Handle[]>
    ENTRY(distBarrier),        // () => Promise<void>
    ENTRY(distSamplerPerm),    // (n: number, seed: number) => Handle
    ENTRY(ddpCreate),          // (params: readonly Handle[], states: readonly Handle[], buffers: readonly Handle[], options: DdpOptions) => NativeDdp
    ENTRY(ddpPreForward),      // (ddp: NativeDdp, gradEnabled: boolean, syncBuffers: boolean) => void
    ENTRY(ddpPostForward),     // (ddp: NativeDdp, outputs: readonly Handle[]) => void
    ENTRY(ddpSyncBuffers),     // (ddp: NativeDdp) => void
    ENTRY(ddpDestroy),         // (ddp: NativeDdp) => void
    ENTRY(distSyncBatchNorm),  // (input: Handle, weight: Handle | null | undefined, bias: Handle | null | undefined, runningMean: Handle | null | undefined, runningVar: Handle | null | undefined, momentum: number, eps: number) => Handle
    ENTRY(tensorSetData),      // (tensor: Handle, source: Handle) => void
};

void initDist(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(kDist), std::end(kDist)); }

}  // namespace residual
