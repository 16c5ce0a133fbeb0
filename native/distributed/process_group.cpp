// Data-parallel training on PyTorch's own distributed engine, c10d, as libtorch ships it: the
// TCPStore rendezvous, ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA builds with RESIDUAL_NCCL),
// the DDP Reducer (bucketed gradient all-reduce while backward runs), broadcast_coalesced and
// verify_params_across_processes. No collective is implemented here: every one is c10d's.
//
// The store and process group are laid out exactly as torch.distributed.init_process_group lays them
// out (a TCPStore hosted by rank 0, or by torchrun's agent or `residual launch` when
// TORCHELASTIC_USE_AGENT_STORE=True; prefixes "default_pg" / "0/" / "<device>/"), so a Node rank can join
// a group with Python ranks. Every rank talks to the store with libtorch's TCPStore client; the server
// rank 0 hosts is residual's own (native/distributed/store.cpp: every read bounded by size and time).
//
// Collectives called from JS first exchange a small header (an all-gather of a few int64 per rank: the
// call, its tensors' dtypes and sizes, and any local refusal), so ranks that disagree all get the same
// clear error instead of Gloo aborting the process (a size mismatch is detected in Gloo's own I/O
// thread, where nothing can catch it).
//
// Gloo's headers come from outside the wheel (Debian's libgloo-dev) and are used header-only: this
// file never touches a gloo object's internals (devices are made by libtorch's exported factories
// and held through shared_ptr), and the ProcessGroupGloo object is built in a buffer with a guard
// zone, checked after construction, so a layout mismatch with the library is an error, not silent
// memory corruption.
//
// This file: the process group (init, info, destroy), the async worker every collective runs on, the
// exact option readers, the agreement step, the collectives and the sampler's permutation. DDP and
// SyncBatchNorm are in ddp.cpp, the store server's functions for JS in store_ops.cpp, what they share
// in dist.h.
#include "residual.h"
#include "dist.h"
#include "store.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#if defined(RESIDUAL_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(RESIDUAL_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cctype>
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

namespace dist {

namespace {

// The one default process group of this process (like torch.distributed's WORLD). Deliberately never
// destroyed by a static destructor: gloo's threads may still run at exit.
struct DistState {
  std::mutex mu;
  c10::intrusive_ptr<c10d::Store> store;  // libtorch's TCPStore client
  std::shared_ptr<StoreServer> server;    // the store rank 0 hosts (null when another process hosts it)
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::string backendName;
  int rank = -1, size = 0;
  std::chrono::milliseconds timeout{0};
  int deviceIndex = 0;
  // Whether every rank is residual's (so the agreement step before collectives runs): false in a job
  // with PyTorch ranks, which do not take part in it.
  bool checks = true;
};
DistState& state() {
  static DistState* s = new DistState();
  return *s;
}

}  // namespace

c10::intrusive_ptr<c10d::ProcessGroup> currentPg(const char* what) {
  auto& S = state();
  std::lock_guard<std::mutex> lk(S.mu);
  if (!S.pg) throw std::runtime_error(std::string(what) + ": no process group (call dist.initProcessGroup() first)");
  return S.pg;
}

bool checksEnabled() { return state().checks; }

std::shared_ptr<StoreServer> hostedStore() {
  auto& S = state();
  std::lock_guard<std::mutex> lk(S.mu);
  return S.server;
}

namespace {

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
      throw std::runtime_error(
          "ProcessGroupGloo's layout in libtorch differs from the headers this addon was built with "
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
  if (c.backend == "nccl")
    throw std::runtime_error("backend 'nccl' needs the CUDA build of the addon (this one is " RESIDUAL_VARIANT "): use 'gloo'");
#endif
  if (c.backend != "gloo" && c.backend != "nccl") throw std::runtime_error("unknown backend '" + c.backend + "' (gloo or nccl)");
#if !defined(RESIDUAL_GLOO)
  if (c.backend == "gloo") throw std::runtime_error(kNoGloo);
#endif
  // Rank 0 hosts residual's store server (libtorch's own server can be stalled by one peer: see
  // store.h); every rank, rank 0 included, is a TCPStore client of it.
  std::shared_ptr<StoreServer> server;
  int port = c.port;
  if (c.hostStore && !c.agentStore) {
    StoreLimits lim;
    lim.maxConnections = std::max<size_t>(1024, size_t(c.size) * 4 + 64);
    server = StoreServer::start(uint16_t(c.port), c.timeout, lim);
    port = server->port();
  }
  c10d::TCPStoreOptions so;
  so.port = uint16_t(port);
  so.isServer = false;
  so.numWorkers = size_t(c.size);
  so.waitWorkers = true;  // a client adds itself to the "init/" counter, which rank 0 waits on below
  so.timeout = c.timeout;
  so.multiTenant = false;
  so.useLibUV = false;  // the libuv backend would bind to Node's own libuv
  auto tcp = c10::make_intrusive<c10d::TCPStore>(c.addr, so);
  tcp->setTimeout(c.timeout);
  if (server) {
    int64_t joined = 0;
    if (!server->waitCounter("init/", c.size, c.timeout, &joined))
      throw std::runtime_error("timed out after " + std::to_string(c.timeout.count()) +
                               "ms waiting for the other ranks to join the store on port " + std::to_string(port) + " (" +
                               std::to_string(joined) + " of " + std::to_string(c.size) + " ranks joined)");
  }
  c10::intrusive_ptr<c10d::Store> base = c10::make_intrusive<c10d::PrefixStore>("default_pg", tcp);
  auto groupStore = c10::make_intrusive<c10d::PrefixStore>(c.groupName + "/", base);
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(groupStore, c.rank, c.size);
  // Says "this rank is residual's" before the backend connects: see `checks` below.
  const std::string kMark = "residual_rank/";
  groupStore->set(kMark + std::to_string(c.rank), std::vector<uint8_t>{'1'});
  bool lazy = false;
  c10::intrusive_ptr<c10d::Backend> backend;
  if (c.backend == "gloo") {
#if defined(RESIDUAL_GLOO)
    pg->setDefaultBackend(c10d::ProcessGroup::GLOO);
    auto backendStore = c10::make_intrusive<c10d::PrefixStore>("cpu/", groupStore);
    auto opts = c10d::ProcessGroupGloo::Options::create(c.timeout);
    lazy = c10d::getDefaultGlooLazyInit();
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
  // The backend connected every rank to every other (unless lazily), so each residual rank has set its
  // mark by now: a missing mark is a rank that is not residual's (a PyTorch rank), and then no rank
  // runs the agreement step (every rank sees the same marks, so all decide alike).
  bool checks = true;
  if (!lazy) {
    std::vector<std::string> keys;
    for (int r = 0; r < c.size; r++) keys.push_back(kMark + std::to_string(r));
    for (size_t i = 0; i < keys.size() && checks; i += 65536) {
      std::vector<std::string> part(keys.begin() + i, keys.begin() + std::min(keys.size(), i + 65536));
      checks = groupStore->check(part);
    }
  }
  const char* env = std::getenv("RESIDUAL_DIST_CHECKS");
  if (env && std::string(env) == "0") checks = false;
  std::lock_guard<std::mutex> lk(S.mu);
  S.checks = checks;
  S.store = tcp;
  S.server = server;
  S.pg = pg;
  S.backend = backend;
  S.backendName = c.backend;
  S.rank = c.rank;
  S.size = c.size;
  S.timeout = c.timeout;
  S.deviceIndex = c.deviceIndex;
}

// An error's text (libtorch's without its C++ backtrace) and the JS class it becomes.
struct ErrInfo {
  std::string text;
  ErrKind kind = ErrKind::Generic;
  const char* jsType = nullptr;  // "TypeError" / "RangeError" / null (kind's class)
};
ErrInfo errInfo(std::exception_ptr e) {
  ErrInfo r;
  try {
    std::rethrow_exception(e);
  } catch (const ArgError& x) {
    r.text = x.what();
    r.jsType = "TypeError";
  } catch (const RangeArgError& x) {
    r.text = x.what();
    r.jsType = "RangeError";
  } catch (const KindError& x) {
    r.text = x.what();
    r.kind = x.kind;
  } catch (const c10::Error& x) {
    std::string m = x.what_without_backtrace();
    auto pos = m.find("\nException raised from");
    if (pos != std::string::npos) m = m.substr(0, pos);
    r.text = m;
  } catch (const std::exception& x) {
    r.text = x.what();
  } catch (...) {
    r.text = "unknown error";
  }
  return r;
}

// Runs `job` on a libuv thread and settles a Promise; `done` builds the resolved value on the JS thread.
class DistWorker : public Napi::AsyncWorker {
 public:
  DistWorker(Napi::Env env, std::string what, std::function<void()> job, std::function<Napi::Value(Napi::Env)> done, std::string tag = "")
      : Napi::AsyncWorker(env),
        what_(std::move(what)),
        job_(std::move(job)),
        done_(std::move(done)),
        deferred_(Napi::Promise::Deferred::New(env)),
        tag_(std::move(tag)) {}
  void Execute() override {
    try {
      job_();
    } catch (...) {
      err_ = errInfo(std::current_exception());
      SetError(err_.text);
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
      } catch (...) {}
    } catch (...) {}
  }
  void OnError(const Napi::Error&) override {
    try {
      // The same classes as a synchronous native error (DtypeError, ShapeError, TypeError, ...).
      napi_env env = Env();
      throwJs(env, err_.kind, err_.jsType, (tag_.empty() ? rankTag() : tag_) + what_ + ": " + err_.text);
      napi_value exc = nullptr;
      if (napi_get_and_clear_last_exception(env, &exc) != napi_ok || !exc) return;
      Napi::Value v(env, exc);
      // A plain failure of the group (timeout, lost peer) says so in its code; kinds keep theirs.
      if (v.IsObject() && err_.kind == ErrKind::Generic && !err_.jsType)
        v.As<Napi::Object>().Set("code", Napi::String::New(env, "ERR_RESIDUAL_DIST"));
      deferred_.Reject(v);
    } catch (...) {}
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 private:
  std::string what_;
  std::function<void()> job_;
  std::function<Napi::Value(Napi::Env)> done_;
  Napi::Promise::Deferred deferred_;
  std::string tag_;  // "[rank R] " before the group exists (initProcessGroup)
  ErrInfo err_;
};

Napi::Value runAsync(Napi::Env env, const std::string& what, std::function<void()> job,
                     std::function<Napi::Value(Napi::Env)> done = nullptr, std::string tag = "") {
  auto* w = new DistWorker(env, what, std::move(job), std::move(done), std::move(tag));
  auto p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

// Waits for a collective; a timeout or a lost peer says what it means for the job (Gloo's own text,
// "Operation timed out!" or "Connection closed by peer", follows).
void waitWork(const c10::intrusive_ptr<c10d::Work>& work) {
  auto& S = state();
  try {
    work->wait(S.timeout);
  } catch (...) {
    ErrInfo e = errInfo(std::current_exception());
    std::string low = e.text;
    std::transform(low.begin(), low.end(), low.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    if (low.find("timed out") != std::string::npos || low.find("timeout") != std::string::npos)
      throw std::runtime_error("no answer from the other ranks within " + std::to_string(S.timeout.count()) +
                               " ms (a rank, a node or the network is gone, or a rank is stuck): " + e.text);
    if (low.find("closed by peer") != std::string::npos || low.find("connection reset") != std::string::npos)
      throw std::runtime_error("another rank left the group (its process ended, or its connection broke): " + e.text);
    throw;
  }
}

// ---- exact options ------------------------------------------------------------------------------

bool has(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return !v.IsUndefined() && !v.IsNull();
}
// An integer option in [lo, hi] (exactInt: a fraction is a TypeError; NaN, Infinity, beyond 2^53 and
// outside the range are RangeErrors naming the value as given).
int64_t intOpt(const Napi::Object& o, const char* k, int64_t d, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined() || v.IsNull()) return d;
  if (!v.IsNumber()) throw ArgError(std::string("option '") + k + "' must be an integer, got " + describe(v));
  double x = v.As<Napi::Number>().DoubleValue();
  int64_t n = exactInt(x, std::string("option '") + k + "'");
  if (n < lo || n > hi)
    throw RangeArgError(std::string("option '") + k + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                        "], got " + std::to_string(n));
  return n;
}
bool boolOpt(const Napi::Object& o, const char* k, bool d) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined() || v.IsNull()) return d;
  if (!v.IsBoolean()) throw ArgError(std::string("option '") + k + "' must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}
std::string optStr(const Napi::Object& o, const char* k, const std::string& d) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined() || v.IsNull()) return d;
  if (!v.IsString()) throw ArgError(std::string("option '") + k + "' must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}

namespace {

c10d::ReduceOp reduceOp(const std::string& s) {
  if (s == "sum" || s == "avg") return c10d::ReduceOp::SUM;  // avg: a sum, divided by the caller
  if (s == "product") return c10d::ReduceOp::PRODUCT;
  if (s == "min") return c10d::ReduceOp::MIN;
  if (s == "max") return c10d::ReduceOp::MAX;
  throw ArgError("unknown reduce op '" + s + "' (sum, avg, product, min, max)");
}
int64_t reduceOpId(const std::string& s) {
  static const char* ops[] = {"sum", "avg", "product", "min", "max"};
  for (int64_t i = 0; i < 5; i++)
    if (s == ops[i]) return i;
  return -1;
}

// ---- agreement across ranks before a collective ----------------------------------------------------

constexpr int64_t kMetaMagic = 0x52534431;  // "RSD1"
const char* callName(int64_t k) {
  switch (k) {
    case kAllReduce: return "allReduce";
    case kBroadcast: return "broadcast";
    case kAllGather: return "allGather";
    case kBarrier: return "barrier";
    case kDdp: return "DistributedDataParallel";
    default: return "an unknown call";
  }
}
// The text of a rank's refusal (enum Refusal: dist.h).
const char* refusalText(int64_t r) {
  switch (r) {
    case kNotContiguous: return "a tensor is not contiguous (call .contiguous() first)";
    case kWrongDevice: return "a tensor is on a device the group's backend does not serve";
    case kNotDense: return "a tensor is not dense (sparse tensors are not supported)";
    case kAvgInteger: return "op 'avg' needs floating-point tensors (an integer average would be truncated): use 'sum' and divide";
    case kBadSrc: return "src is not a rank of the group";
    case kMixedDevices: return "the tensors are on different devices";
    default: return "it refused the call";
  }
}

uint64_t mix(uint64_t h, int64_t v) {
  // FNV-1a over the 8 bytes of v: a fingerprint of the tensor list, compared across ranks.
  for (int i = 0; i < 8; i++) {
    h ^= (uint64_t(v) >> (8 * i)) & 0xff;
    h *= 1099511628211ULL;
  }
  return h;
}
constexpr uint64_t kFnvBasis = 1469598103934665603ULL;

// One tensor's description, the same width on every rank: dtype, device type, requires-grad, ndim,
// numel, a fingerprint of all sizes, then the first kShown sizes (-1 past ndim).
constexpr int kShown = 6;
constexpr int kDescWidth = 6 + kShown;
void describeTensor(const at::Tensor& t, std::vector<int64_t>& out) {
  uint64_t h = kFnvBasis;
  for (auto d : t.sizes()) h = mix(h, d);
  out.push_back(int64_t(t.scalar_type()));
  out.push_back(int64_t(t.device().type()));
  out.push_back(t.requires_grad() ? 1 : 0);
  out.push_back(t.dim());
  out.push_back(t.numel());
  out.push_back(int64_t(h));
  for (int k = 0; k < kShown; k++) out.push_back(k < t.dim() ? t.size(k) : -1);
}
// residual's names of the dtypes (lib/tensor's), libtorch's for any other.
std::string dtypeName(int64_t code) {
  switch (at::ScalarType(int8_t(code))) {
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kHalf: return "float16";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kBool: return "bool";
    case at::kBFloat16: return "bfloat16";
    default: return c10::toString(at::ScalarType(int8_t(code)));
  }
}
std::string descText(const int64_t* d, bool withGrad, bool withDevice) {
  std::string s = dtypeName(d[0]) + " [";
  for (int64_t k = 0; k < d[3]; k++) {
    if (k) s += ", ";
    if (k >= kShown) {
      s += "...";
      break;
    }
    s += std::to_string(d[6 + k]);
  }
  s += "]";
  if (withDevice) s += std::string(" on ") + c10::DeviceTypeName(c10::DeviceType(int8_t(d[1])), true);
  if (withGrad) s += d[2] ? " (requires grad)" : " (no grad)";
  return s;
}

at::Device metaDevice() {
  auto& S = state();
#if defined(RESIDUAL_NCCL)
  if (S.backendName == "nccl") return at::Device(at::kCUDA, int8_t(S.deviceIndex));
#endif
  (void)S;
  return at::Device(at::kCPU);
}

// Every rank's `mine` (the same length on every rank), in rank order: one all-gather of int64.
std::vector<std::vector<int64_t>> gatherAll(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, const std::vector<int64_t>& mine) {
  auto dev = metaDevice();
  auto in = at::tensor(c10::ArrayRef<int64_t>(mine), at::TensorOptions().dtype(at::kLong)).to(dev);
  std::vector<at::Tensor> ins{in};
  std::vector<std::vector<at::Tensor>> outs(1);
  for (int r = 0; r < pg->getSize(); r++) outs[0].push_back(at::empty_like(in));
  waitWork(pg->allgather(outs, ins));
  std::vector<std::vector<int64_t>> all;
  for (auto& t : outs[0]) {
    auto c = t.to(at::kCPU).contiguous();
    all.emplace_back(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  }
  return all;
}

}  // namespace

// The agreement step of a call: a header per rank, then (only when they differ) each tensor's
// description. Every rank reaches the same verdict from the same data and throws the same error.
// `sizesMatter`: the shapes must agree (allGather, DDP), not only the element counts.
void agree(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, int64_t kind, int64_t param, const std::vector<at::Tensor>& ts,
           int64_t refusal, bool sizesMatter, const std::vector<std::string>& names, const std::vector<int64_t>& extra) {
  const int me = pg->getRank();
  std::vector<int64_t> descs;
  for (auto& t : ts) describeTensor(t, descs);
  uint64_t h = kFnvBasis;
  for (size_t i = 0; i < ts.size(); i++) {
    const int64_t* d = &descs[i * kDescWidth];
    h = mix(h, d[0]);
    h = mix(h, d[1]);
    h = mix(h, kind == kDdp ? d[2] : 0);
    h = mix(h, sizesMatter ? d[5] : d[4]);
    h = mix(h, sizesMatter ? d[3] : 0);
  }
  std::vector<int64_t> head{kMetaMagic, kind, param, int64_t(ts.size()), refusal, int64_t(h)};
  head.insert(head.end(), extra.begin(), extra.end());
  // The header has a fixed width per call kind; a rank calling a different kind with a different
  // width cannot pair with it, so every header is padded to the same width.
  head.resize(12, 0);
  auto all = gatherAll(pg, head);
  const std::string call = callName(kind);
  for (int r = 0; r < int(all.size()); r++) {
    if (all[r][0] != kMetaMagic)
      throw std::runtime_error("rank " + std::to_string(r) + " is not running residual's collective (a Python rank calling " + call +
                               " directly?)");
  }
  for (int r = 0; r < int(all.size()); r++) {
    if (all[r][1] != kind)
      throw std::runtime_error("the ranks called different collectives: rank " + std::to_string(me) + " called " + call + ", rank " +
                               std::to_string(r) + " called " + callName(all[r][1]) +
                               " (every rank must make the same calls in the same order)");
  }
  for (int r = 0; r < int(all.size()); r++) {
    if (all[r][4] != kOk) {
      std::string why = refusalText(all[r][4]);
      ErrKind k = all[r][4] == kAvgInteger                                  ? ErrKind::Dtype
                  : all[r][4] == kWrongDevice || all[r][4] == kMixedDevices ? ErrKind::Device
                                                                            : ErrKind::Generic;
      std::string who = r == me ? std::string("on this rank, ") : "rank " + std::to_string(r) + " refused it: ";
      throw KindError(k, who + why);
    }
  }
  for (int r = 0; r < int(all.size()); r++) {
    if (all[r][2] != all[0][2]) {
      const char* what = kind == kBroadcast ? "src" : kind == kAllReduce ? "op" : "its options";
      std::string a = std::to_string(all[0][2]), b = std::to_string(all[r][2]);
      if (kind == kAllReduce) {
        static const char* ops[] = {"sum", "avg", "product", "min", "max"};
        auto name = [&](int64_t v) { return v >= 0 && v < 5 ? std::string("'") + ops[v] + "'" : std::to_string(v); };
        a = name(all[0][2]);
        b = name(all[r][2]);
      }
      throw std::runtime_error(std::string("the ranks disagree on ") + what + ": rank 0 passed " + a + ", rank " + std::to_string(r) +
                               " passed " + b);
    }
  }
  for (int r = 0; r < int(all.size()); r++) {
    if (all[r][3] != all[0][3]) {
      const char* things = kind == kDdp ? " parameters and buffers" : " tensors";
      throw KindError(ErrKind::Shape, "the ranks disagree on the number of" + std::string(things) + ": rank 0 has " +
                                          std::to_string(all[0][3]) + ", rank " + std::to_string(r) + " has " + std::to_string(all[r][3]));
    }
  }
  // The options beyond the tensors (DDP: trainable count, bucket sizes, findUnusedParameters), once
  // the tensors agree (a frozen parameter shows in its description first).
  auto optionsAgree = [&] {
    for (int r = 0; r < int(all.size()); r++)
      for (size_t k = 6; k < all[r].size(); k++)
        if (all[r][k] != all[0][k])
          throw std::runtime_error("the ranks disagree on " + call + "'s options (rank 0 and rank " + std::to_string(r) +
                                   (kind == kDdp ? " differ in bucketCapMB or findUnusedParameters)" : " differ)"));
  };
  bool same = true;
  for (auto& hd : all) same = same && hd[5] == all[0][5];
  if (same) return optionsAgree();
  // They differ: every rank's descriptions (the same count everywhere now), to name the first difference.
  auto ds = gatherAll(pg, descs.empty() ? std::vector<int64_t>{0} : descs);
  const size_t n = ts.size();
  for (size_t i = 0; i < n; i++) {
    for (int r = 1; r < int(ds.size()); r++) {
      const int64_t* a = &ds[0][i * kDescWidth];
      const int64_t* b = &ds[r][i * kDescWidth];
      bool dtype = a[0] != b[0], device = a[1] != b[1], grad = kind == kDdp && a[2] != b[2];
      bool size = sizesMatter ? (a[3] != b[3] || a[5] != b[5]) : a[4] != b[4];
      if (!(dtype || device || grad || size)) continue;
      std::string what = kind == kDdp ? "'" + (i < names.size() ? names[i] : std::to_string(i)) + "'" : "tensor " + std::to_string(i);
      std::string msg = (kind == kDdp ? "the replicas differ: " : "the ranks disagree on the tensors: ") + what + " is " +
                        descText(b, grad, device) + (sizesMatter ? "" : " (" + std::to_string(b[4]) + " elements)") + " on rank " +
                        std::to_string(r) + " but " + descText(a, grad, device) +
                        (sizesMatter ? "" : " (" + std::to_string(a[4]) + " elements)") + " on rank 0";
      if (kind == kDdp) msg += " (every rank must build the same model, with the same dtypes)";
      throw KindError(dtype ? ErrKind::Dtype : device ? ErrKind::Device : size ? ErrKind::Shape : ErrKind::Generic, msg);
    }
  }
  throw std::runtime_error("the ranks disagree on the tensors (their fingerprints differ)");
}

namespace {

// The agreement step when every rank is residual's; otherwise (PyTorch ranks in the job, which make no
// such step) only this rank's own refusal, before anything is sent.
void preflight(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, int64_t kind, int64_t param, const std::vector<at::Tensor>& ts,
               int64_t refusal, bool sizesMatter) {
  if (state().checks) return agree(pg, kind, param, ts, refusal, sizesMatter);
  if (refusal != kOk) throw KindError(refusal == kAvgInteger ? ErrKind::Dtype : ErrKind::Generic, refusalText(refusal));
}

// A rank's own refusal of a collective's tensors (sent in the header, so that every rank fails).
int64_t refuse(const std::vector<at::Tensor>& ts, bool avg) {
  auto& S = state();
  for (auto& t : ts) {
    if (t.layout() != at::kStrided) return kNotDense;
    if (!t.is_contiguous()) return kNotContiguous;
    if (t.device() != ts[0].device()) return kMixedDevices;
    if (S.backendName == "nccl" ? !t.is_cuda() : !(t.is_cpu() || t.is_cuda())) return kWrongDevice;
    if (avg && !(at::isFloatingType(t.scalar_type()) || at::isComplexType(t.scalar_type()))) return kAvgInteger;
  }
  return kOk;
}

}  // namespace

// distInit({backend, rank, worldSize, masterAddr, masterPort, timeoutMs, hostStore, agentStore,
// ifnames: string (comma-separated), groupName}) -> Promise<void>. Every number is checked exactly:
// rank an integer in [0, worldSize), worldSize in [1, 2^31 - 1], masterPort in [0, 65535], timeoutMs in
// [1, 2^31 - 1].
DEFN(distInit) {
  if (!a.has(0) || !a.info[0].IsObject()) a.fail(0, "options", "an object");
  auto o = a.info[0].As<Napi::Object>();
  InitCfg c;
  c.backend = optStr(o, "backend", "gloo");
  c.size = int(intOpt(o, "worldSize", 1, 1, kMaxRanks));
  c.rank = int(intOpt(o, "rank", 0, 0, kMaxRanks - 1));
  if (c.rank >= c.size)
    throw RangeArgError("option 'rank' must be an integer in [0, " + std::to_string(c.size - 1) + "] (worldSize " + std::to_string(c.size) +
                        "), got " + std::to_string(c.rank));
  c.addr = optStr(o, "masterAddr", "127.0.0.1");
  if (c.addr.empty()) throw ArgError("option 'masterAddr' must not be empty");
  c.port = int(intOpt(o, "masterPort", 29500, 0, 65535));
  c.timeout = std::chrono::milliseconds(intOpt(o, "timeoutMs", 1800000, 1, kMaxTimeoutMs));
  c.hostStore = boolOpt(o, "hostStore", c.rank == 0);
  c.agentStore = boolOpt(o, "agentStore", false);
  if (c.port == 0 && !(c.hostStore && !c.agentStore))
    throw RangeArgError("option 'masterPort' 0 (any free port) works only for the rank that hosts the store");
  c.ifnames = splitComma(optStr(o, "ifnames", ""));
  c.groupName = optStr(o, "groupName", "0");
  c.deviceIndex = int(intOpt(o, "deviceIndex", 0, 0, 1 << 20));
  return runAsync(
      a.env(), "initProcessGroup", [c] { doInit(c); }, nullptr, "[rank " + std::to_string(c.rank) + "] ");
}

// distInfo() -> {rank, worldSize, backend, timeoutMs, storePort?} | null
DEFN(distInfo) {
  auto& S = state();
  std::lock_guard<std::mutex> lk(S.mu);
  if (!S.pg) return a.env().Null();
  auto o = Napi::Object::New(a.env());
  o.Set("rank", S.rank);
  o.Set("worldSize", S.size);
  o.Set("backend", S.backendName);
  o.Set("timeoutMs", double(S.timeout.count()));
  if (S.server) o.Set("storePort", double(S.server->port()));
  return o;
}

// distDestroy(): drops the process group (gloo's threads are joined), the store client and the server.
DEFN(distDestroy) {
  auto& S = state();
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  c10::intrusive_ptr<c10d::Backend> backend;
  c10::intrusive_ptr<c10d::Store> store;
  std::shared_ptr<StoreServer> server;
  {
    std::lock_guard<std::mutex> lk(S.mu);
    pg = std::move(S.pg);
    backend = std::move(S.backend);
    store = std::move(S.store);
    server = std::move(S.server);
    S.rank = -1;
    S.size = 0;
    S.backendName.clear();
  }
  if (pg) pg->shutdown();
  return a.env().Undefined();
}

// The collectives below run whole on a libuv thread: the agreement step, then the collective, then the
// wait. lib/distributed issues them one at a time, in call order, so every rank issues the same
// sequence.

// distAllReduce(tensors[], op) -> Promise<void>: each tensor reduced in place across the ranks ('avg':
// summed here, divided by the caller; refused for integer tensors).
DEFN(distAllReduce) {
  auto ts = a.TL(0, "tensors");
  std::string opName = a.has(1) ? a.Str(1, "op") : std::string("sum");
  c10d::AllreduceOptions opts;
  opts.reduceOp = reduceOp(opName);
  int64_t opId = reduceOpId(opName);
  auto pg = currentPg("allReduce");
  return runAsync(a.env(), "allReduce", [pg, ts, opts, opId, opName] {
    preflight(pg, kAllReduce, opId, ts, refuse(ts, opName == "avg"), false);
    // One collective per tensor (c10d's list form means one tensor per local device, reduced together).
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      works.push_back(pg->allreduce(one, opts));
    }
    for (auto& w : works) waitWork(w);
  });
}

// distBroadcast(tensors[], src) -> Promise<void>
DEFN(distBroadcast) {
  auto ts = a.TL(0, "tensors");
  int64_t src = a.I(1, "src");
  auto pg = currentPg("broadcast");
  if (src < 0 || src >= pg->getSize())
    throw RangeArgError("src must be a rank in [0, " + std::to_string(pg->getSize() - 1) + "], got " + std::to_string(src));
  return runAsync(a.env(), "broadcast", [pg, ts, src] {
    preflight(pg, kBroadcast, src, ts, refuse(ts, false), false);
    c10d::BroadcastOptions opts;
    opts.rootRank = src;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      works.push_back(pg->broadcast(one, opts));
    }
    for (auto& w : works) waitWork(w);
  });
}

// distAllGather(tensor) -> Promise<Tensor[]> (one tensor per rank, in rank order; the shapes must agree)
DEFN(distAllGather) {
  at::Tensor t = a.T(0, "tensor");
  auto pg = currentPg("allGather");
  auto outs = std::make_shared<std::vector<std::vector<at::Tensor>>>(1);
  return runAsync(
      a.env(), "allGather",
      [pg, t, outs] {
        std::vector<at::Tensor> in{t};
        preflight(pg, kAllGather, 0, in, refuse(in, false), true);
        for (int r = 0; r < pg->getSize(); r++) (*outs)[0].push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
        waitWork(pg->allgather(*outs, in));
      },
      [outs](Napi::Env env) { return wrap(env, (*outs)[0]); });
}

// distBarrier() -> Promise<void>: the agreement step is itself an all-gather, so it is the barrier.
DEFN(distBarrier) {
  auto pg = currentPg("barrier");
  return runAsync(a.env(), "barrier", [pg] {
    if (state().checks) return agree(pg, kBarrier, 0, {}, kOk, false);
    waitWork(pg->barrier(c10d::BarrierOptions()));
  });
}

// distSamplerPerm(n, seed) -> int64 Tensor: torch.randperm(n, generator=torch.Generator().manual_seed(seed))
DEFN(distSamplerPerm) {
  int64_t n = a.I(0, "n");
  int64_t seed = a.I(1, "seed");
  if (n < 0) throw RangeArgError("n must be >= 0");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t(seed));
  return wrap(a.env(), at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)));
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kDist[] = {
    ENTRY(distInit),           // (options: DistInitOptions) => Promise<void>
    ENTRY(distInfo),           // () => DistInfo | null
    ENTRY(distDestroy),        // () => void
    ENTRY(distAllReduce),      // (tensors: readonly Handle[], op?: string | null) => Promise<void>
    ENTRY(distBroadcast),      // (tensors: readonly Handle[], src: number) => Promise<void>
    ENTRY(distAllGather),      // (tensor: Handle) => Promise<Handle[]>
    ENTRY(distBarrier),        // () => Promise<void>
    ENTRY(distSamplerPerm),    // (n: number, seed: number) => Handle
};
// clang-format on

}  // namespace dist

void initDist(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(dist::kDist), std::end(dist::kDist)); }

}  // namespace residual
