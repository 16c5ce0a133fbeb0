// DistributedDataParallel on c10d's Reducer (bucketed gradient all-reduce while backward runs, rank 0's
// states broadcast with broadcast_coalesced, the replicas checked with verify_params_across_processes),
// SyncBatchNorm (batch statistics all-reduced in forward and backward), and tensorSetData (a parameter
// re-laid in place, as PyTorch's Module._apply). The process group itself: process_group.cpp.
#include "residual.h"
#include "dist.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <limits>

namespace residual {
namespace dist {

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
    } catch (...) {}
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
  constexpr int64_t kMaxBucket = int64_t(1) << 50;
  int64_t cap = intOpt(o, "bucketCapBytes", 25 * 1024 * 1024, 1, kMaxBucket);
  int64_t first = intOpt(o, "firstBucketBytes", 1024 * 1024, 1, kMaxBucket);
  bool findUnused = boolOpt(o, "findUnusedParameters", false);
  std::vector<std::string> names;
  if (has(o, "names")) {
    Napi::Value nv = o.Get("names");
    if (!nv.IsArray()) throw ArgError("option 'names' must be an array of strings, got " + describe(nv));
    auto arr = nv.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value e = arr.Get(i);
      if (!e.IsString()) throw ArgError("option 'names' element " + std::to_string(i) + " must be a string, got " + describe(e));
      names.push_back(e.As<Napi::String>().Utf8Value());
    }
  }
  if (params.empty()) throw ArgError("DistributedDataParallel: the model has no parameters");
  for (size_t i = 0; i < params.size(); i++)
    if (!params[i].requires_grad()) throw ArgError("DistributedDataParallel: parameter " + std::to_string(i) + " does not require grad");
  auto pg = currentPg("DistributedDataParallel");
  // residual's agreement step first (dtypes, shapes, devices, requires-grad, names, bucket options: one
  // all-gather, a second only when they differ), so that every rank gets the same error naming the
  // parameter; then c10d's own check (sizes and strides) and rank 0's states, as torch's DDP does.
  if (checksEnabled()) {
    std::vector<int64_t> extra{int64_t(params.size()), cap, first, findUnused ? 1 : 0};
    agree(pg, kDdp, 0, states, kOk, true, names, extra);
  }
  c10d::verify_params_across_processes(pg, params, std::nullopt);
  broadcastStates(pg, states);
  std::vector<size_t> limits;
  if (!findUnused)
    limits = {std::numeric_limits<size_t>::max()};
  else if (first < cap)
    limits = {size_t(first), size_t(cap)};
  else
    limits = {size_t(cap)};
  std::vector<bool> sparse(params.size(), false);
  auto [buckets, perBucket] = c10d::compute_bucket_assignment_by_size(params, limits, sparse);
  (void)perBucket;
  std::reverse(buckets.begin(), buckets.end());
  auto d = std::make_unique<Ddp>();
  d->pg = pg;
  d->params = params;
  d->buffers = buffers;
  d->findUnused = findUnused;
  d->reducer =
      std::make_unique<c10d::Reducer>(params, buckets, pg, sparse, cap, findUnused,
                                      /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{}, first,
                                      /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, std::vector<int64_t>{});
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
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            at::Tensor runningMean, at::Tensor runningVar, double momentum, double eps) {
    auto pg = currentPg("SyncBatchNorm");
    int64_t C = x.size(1);
    std::vector<int64_t> dims{0};
    for (int64_t k = 2; k < x.dim(); k++) dims.push_back(k);
    at::Tensor xd = x.to(at::kDouble);
    at::Tensor stats =
        at::cat({xd.sum(dims), (xd * xd).sum(dims), at::full({1}, double(x.numel() / std::max<int64_t>(C, 1)), xd.options())});
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
  if (src.sizes() != t.sizes())
    throw ArgError("tensorSetData: the source has shape " + c10::str(src.sizes()) + ", the tensor " + c10::str(t.sizes()));
  at::NoGradGuard ng;
  t.mutable_grad().reset();
  t.set_data(src.detach());
  return a.env().Undefined();
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kDdpFns[] = {
    ENTRY(ddpCreate),          // (params: readonly Handle[], states: readonly Handle[], buffers: readonly Handle[], options: DdpOptions) => NativeDdp
    ENTRY(ddpPreForward),      // (ddp: NativeDdp, gradEnabled: boolean, syncBuffers: boolean) => void
    ENTRY(ddpPostForward),     // (ddp: NativeDdp, outputs: readonly Handle[]) => void
    ENTRY(ddpSyncBuffers),     // (ddp: NativeDdp) => void
    ENTRY(ddpDestroy),         // (ddp: NativeDdp) => void
    ENTRY(distSyncBatchNorm),  // (input: Handle, weight: Handle | null | undefined, bias: Handle | null | undefined, runningMean: Handle | null | undefined, runningVar: Handle | null | undefined, momentum: number, eps: number) => Handle
    ENTRY(tensorSetData),      // (tensor: Handle, source: Handle) => void
};
// clang-format on

}  // namespace dist

void initDdp(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(dist::kDdpFns), std::end(dist::kDdpFns)); }

}  // namespace residual
