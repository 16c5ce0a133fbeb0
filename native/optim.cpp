// Optimizers whose whole step runs natively in one call: libtorch's _foreach_ kernels over every
// parameter of a group (fused multi-tensor kernels on CUDA, a C++ loop on CPU), never a JS loop.
// The math follows torch/optim (sgd.py, adam.py, adamw.py) so results match PyTorch step for step.
// Also: gradient clipping by total norm and the unscale/inf-check of float16 loss scaling.
//
// CUDA: a group whose parameters are all floating-point CUDA tensors on one device steps with
// libtorch's fused kernels (at::_fused_sgd_, _fused_adam_, _fused_adamw_: one kernel launch for the
// whole update, as torch.optim's fused=True), unless optimSetFused(optimizer, false) turned that off.
// The fused path is also what makes the step capturable in a CUDA graph (native/graphs.cpp): inside
// a capture the learning rate is read from a device tensor (optimSyncLr writes it before each replay)
// and Adam's step counts are device tensors incremented on the device. The CPU path is unchanged.
#include "residual.h"

#if defined(RESIDUAL_CUDA)
#include <c10/cuda/CUDAGraphsC10Utils.h>
#endif

namespace residual {

static const napi_type_tag kOptimTag = {0x2b1f4c8e9d0a7e35ULL, 0x6c5d4e3f2a1b0c99ULL};

struct Group {
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> buf1;  // SGD momentum_buffer / Adam exp_avg
  std::vector<at::Tensor> buf2;  // Adam exp_avg_sq
  std::vector<at::Tensor> buf3;  // Adam max_exp_avg_sq (amsgrad)
  std::vector<int64_t> steps;
  // Fused CUDA path: Adam's step counts as float32 device tensors (the fused kernels read them; once
  // defined they are the step counts), and the lr as a float32 device scalar (used inside a capture).
  std::vector<at::Tensor> stepT;
  at::Tensor lrT;
  double lrValue = 0;  // what lrT holds (optimSyncLr skips the write when the lr is unchanged)
};

struct Optim {
  std::string kind;  // sgd | adam | adamw
  std::vector<Group> groups;
  bool fused = true;  // use the fused CUDA kernels where they apply
};

// Is the calling thread's current CUDA stream capturing a graph?
static bool capturing() {
#if defined(RESIDUAL_CUDA)
  return torch::cuda::is_available() && c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
#else
  return false;
#endif
}

// The fused kernels apply: every parameter a floating-point (float32/float16/bfloat16) CUDA tensor, all
// of one dtype on one device, with dense gradients of that dtype.
static bool fusedApplies(const Optim& o, const std::vector<at::Tensor>& ps, const std::vector<at::Tensor>& gs) {
  if (!o.fused || ps.empty() || !ps[0].is_cuda()) return false;
  for (size_t k = 0; k < ps.size(); k++) {
    const auto& p = ps[k];
    auto st = p.scalar_type();
    if (!p.is_cuda() || p.device() != ps[0].device() || st != ps[0].scalar_type() ||
        (st != at::kFloat && st != at::kHalf && st != at::kBFloat16))
      return false;
    if (gs[k].is_sparse() || gs[k].scalar_type() != st || gs[k].device() != p.device()) return false;
    // the multi-tensor kernels walk every list with the parameter's layout (a gradient set by hand may
    // have other strides: the foreach path handles it)
    if (gs[k].strides() != p.strides() || !p.is_non_overlapping_and_dense()) return false;
  }
  return true;
}

// Inside a capture every tensor the step touches must exist already: allocating state here would
// capture its initialisation (and a constant lr) into the graph.
static void needNoAllocation(bool cap, const char* what) {
  if (cap)
    throw std::runtime_error(std::string("optimizer step inside a CUDA graph capture: ") + what +
                             " does not exist yet; run warm-up steps (and optimSyncLr) before capturing");
}

static Optim* getOptim(Args& a, size_t i) {
  bool ok = false;
  if (i >= a.size() || !a.info[i].IsExternal() || napi_check_object_type_tag(a.env(), a.info[i], &kOptimTag, &ok) != napi_ok || !ok)
    a.fail(i, "optimizer", "a native optimizer");
  return a.info[i].As<Napi::External<Optim>>().Data();
}

static double num(const Napi::Object& o, const char* key, double dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1.0 : 0.0;
  if (!v.IsNumber()) throw ArgError(std::string("hyperparameter '") + key + "' must be a number, got " + describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

// optimCreate(kind, groups: Tensor[][]) -> optimizer
DEFN(optimCreate) {
  std::string kind = a.Str(0, "kind");
  if (kind != "sgd" && kind != "adam" && kind != "adamw") throw ArgError("unknown optimizer kind '" + kind + "'");
  if (!a.has(1) || !a.info[1].IsArray()) a.fail(1, "groups", "an array of Tensor arrays");
  auto arr = a.info[1].As<Napi::Array>();
  auto o = std::make_unique<Optim>();
  o->kind = kind;
  for (uint32_t g = 0; g < arr.Length(); g++) {
    Group grp;
    grp.params = tensorsOf(a.env(), arr.Get(g), "group " + std::to_string(g) + " params");
    for (auto& p : grp.params)
      if (!p.is_leaf()) throw ArgError("group " + std::to_string(g) + ": optimizers can only update leaf tensors (parameters)");
    size_t n = grp.params.size();
    grp.buf1.resize(n);
    grp.buf2.resize(n);
    grp.buf3.resize(n);
    grp.steps.assign(n, 0);
    o->groups.push_back(std::move(grp));
  }
  auto ext = Napi::External<Optim>::New(a.env(), o.release(), [](Napi::Env, Optim* p) { delete p; });
  napi_type_tag_object(a.env(), ext, &kOptimTag);
  return ext;
}

static void sgdFused(Group& g, std::vector<at::Tensor>& ps, std::vector<at::Tensor>& gs, const std::vector<size_t>& idx, double lr,
                     double momentum, double dampening, double wd, bool nesterov, bool maximize) {
  bool cap = capturing();
  if (cap && !g.lrT.defined()) needNoAllocation(cap, "the learning-rate tensor");
  auto run = [&](std::vector<at::Tensor>& p, std::vector<at::Tensor>& gr, std::vector<at::Tensor>& bufs, bool first) {
    if (p.empty()) return;
    if (cap)
      at::_fused_sgd_(p, gr, bufs, wd, momentum, g.lrT, dampening, nesterov, maximize, first);
    else
      at::_fused_sgd_(p, gr, bufs, wd, momentum, lr, dampening, nesterov, maximize, first);
  };
  if (momentum == 0) {
    std::vector<at::Tensor> none;
    run(ps, gs, none, false);
    return;
  }
  // parameters stepping for the first time (buffer = gradient) and the others: two launches at most
  std::vector<at::Tensor> p0, g0, b0, p1, g1, b1;
  for (size_t k = 0; k < ps.size(); k++) {
    at::Tensor& b = g.buf1[idx[k]];
    if (!b.defined()) {
      needNoAllocation(cap, "a momentum buffer");
      b = at::empty_like(ps[k], at::MemoryFormat::Preserve);
      p0.push_back(ps[k]), g0.push_back(gs[k]), b0.push_back(b);
    } else {
      p1.push_back(ps[k]), g1.push_back(gs[k]), b1.push_back(b);
    }
  }
  run(p0, g0, b0, true);
  run(p1, g1, b1, false);
}

// The group's parameters that have a gradient, with their gradients and their indices in the group.
static void withGrads(const Group& g, std::vector<at::Tensor>& ps, std::vector<at::Tensor>& gs, std::vector<size_t>& idx) {
  for (size_t i = 0; i < g.params.size(); i++) {
    const at::Tensor& gr = g.params[i].grad();
    if (!gr.defined()) continue;
    ps.push_back(g.params[i]);
    gs.push_back(gr);
    idx.push_back(i);
  }
}

static void sgdStep(const Optim& o, Group& g, const Napi::Object& h) {
  double lr = num(h, "lr", 0), momentum = num(h, "momentum", 0), dampening = num(h, "dampening", 0);
  double wd = num(h, "weightDecay", 0);
  bool nesterov = num(h, "nesterov", 0) != 0, maximize = num(h, "maximize", 0) != 0;
  std::vector<at::Tensor> ps, gs;
  std::vector<size_t> idx;
  withGrads(g, ps, gs, idx);
  if (ps.empty()) return;
  if (fusedApplies(o, ps, gs)) return sgdFused(g, ps, gs, idx, lr, momentum, dampening, wd, nesterov, maximize);
  if (ps[0].is_cuda() && capturing())
    throw std::runtime_error(
        "optimizer step inside a CUDA graph capture: only the fused CUDA path is capturable (all parameters floating-point CUDA tensors on "
        "one device, optimSetFused on)");
  if (maximize) gs = at::_foreach_neg(gs);
  if (wd != 0) gs = at::_foreach_add(gs, ps, wd);
  if (momentum != 0) {
    std::vector<at::Tensor> bufs(ps.size()), oldBufs, oldGrads;
    for (size_t k = 0; k < ps.size(); k++) {
      at::Tensor& b = g.buf1[idx[k]];
      if (!b.defined()) {
        b = gs[k].clone().detach();  // first step: buf = grad
      } else {
        oldBufs.push_back(b);
        oldGrads.push_back(gs[k]);
      }
      bufs[k] = b;
    }
    if (!oldBufs.empty()) {
      at::_foreach_mul_(oldBufs, momentum);
      at::_foreach_add_(oldBufs, oldGrads, 1 - dampening);
    }
    gs = nesterov ? at::_foreach_add(gs, bufs, momentum) : bufs;
  }
  at::_foreach_add_(ps, gs, -lr);
}

static bool adamFused(const Optim& o, Group& g, double lr, double beta1, double beta2, double eps, double wd, bool amsgrad, bool maximize,
                      bool decoupled) {
  std::vector<at::Tensor> ps, gs;
  std::vector<size_t> idx;
  withGrads(g, ps, gs, idx);
  if (ps.empty()) return true;
  if (!fusedApplies(o, ps, gs)) return false;
  bool cap = capturing();
  if (cap && !g.lrT.defined()) needNoAllocation(cap, "the learning-rate tensor");
  if (g.stepT.size() != g.params.size()) g.stepT.resize(g.params.size());
  std::vector<at::Tensor> m, v, vmax, steps;
  for (size_t k = 0; k < ps.size(); k++) {
    size_t i = idx[k];
    const at::Tensor& p = ps[k];
    if (!g.buf1[i].defined() || !g.buf2[i].defined() || (amsgrad && !g.buf3[i].defined()) || !g.stepT[i].defined())
      needNoAllocation(cap, "optimizer state");
    if (!g.buf1[i].defined()) g.buf1[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
    if (!g.buf2[i].defined()) g.buf2[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
    if (amsgrad && !g.buf3[i].defined()) g.buf3[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
    if (!g.stepT[i].defined()) g.stepT[i] = at::full({}, double(g.steps[i]), p.options().dtype(at::kFloat));
    if (!cap) g.steps[i]++;  // host mirror (the device tensor is the count)
    m.push_back(g.buf1[i]);
    v.push_back(g.buf2[i]);
    if (amsgrad) vmax.push_back(g.buf3[i]);
    steps.push_back(g.stepT[i]);
  }
  at::_foreach_add_(steps, 1);
  if (cap) {
    if (decoupled)
      at::_fused_adamw_(ps, gs, m, v, vmax, steps, g.lrT, beta1, beta2, wd, eps, amsgrad, maximize);
    else
      at::_fused_adam_(ps, gs, m, v, vmax, steps, g.lrT, beta1, beta2, wd, eps, amsgrad, maximize);
  } else {
    if (decoupled)
      at::_fused_adamw_(ps, gs, m, v, vmax, steps, lr, beta1, beta2, wd, eps, amsgrad, maximize);
    else
      at::_fused_adam_(ps, gs, m, v, vmax, steps, lr, beta1, beta2, wd, eps, amsgrad, maximize);
  }
  return true;
}

static void adamStep(const Optim& o, Group& g, const Napi::Object& h, bool decoupled) {
  double lr = num(h, "lr", 1e-3), beta1 = num(h, "beta1", 0.9), beta2 = num(h, "beta2", 0.999);
  double eps = num(h, "eps", 1e-8), wd = num(h, "weightDecay", 0);
  bool amsgrad = num(h, "amsgrad", 0) != 0, maximize = num(h, "maximize", 0) != 0;
  if (adamFused(o, g, lr, beta1, beta2, eps, wd, amsgrad, maximize, decoupled)) return;
  if (!g.params.empty() && g.params[0].is_cuda() && capturing())
    throw std::runtime_error(
        "optimizer step inside a CUDA graph capture: only the fused CUDA path is capturable (all parameters floating-point CUDA tensors on "
        "one device, optimSetFused on)");
  std::vector<at::Tensor> ps, gs, m, v, vmax;
  std::vector<at::Scalar> stepSizes, bc2Sqrt;
  for (size_t i = 0; i < g.params.size(); i++) {
    const at::Tensor& gr = g.params[i].grad();
    if (!gr.defined()) continue;
    at::Tensor& p = g.params[i];
    // each buffer on its own: a loaded state may lack one (e.g. max_exp_avg_sq before amsgrad)
    if (!g.buf1[i].defined()) g.buf1[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
    if (!g.buf2[i].defined()) g.buf2[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
    if (amsgrad && !g.buf3[i].defined()) g.buf3[i] = at::zeros_like(p, at::MemoryFormat::Preserve);
    if (i < g.stepT.size() && g.stepT[i].defined()) {
      // The fused CUDA path counted this parameter's steps on the device (replays of a captured step
      // never pass through here): take the count back, and let the fused path rebuild its tensor from
      // g.steps if it runs again, so alternating the two paths keeps one count.
      g.steps[i] = int64_t(std::llround(g.stepT[i].item<double>()));
      g.stepT[i] = at::Tensor();
    }
    int64_t step = ++g.steps[i];
    double bc1 = 1 - std::pow(beta1, double(step));
    double bc2 = 1 - std::pow(beta2, double(step));
    stepSizes.emplace_back(-(lr / bc1));
    bc2Sqrt.emplace_back(std::sqrt(bc2));
    ps.push_back(p);
    gs.push_back(gr);
    m.push_back(g.buf1[i]);
    v.push_back(g.buf2[i]);
    if (amsgrad) vmax.push_back(g.buf3[i]);
  }
  if (ps.empty()) return;
  if (maximize) gs = at::_foreach_neg(gs);
  if (wd != 0) {
    if (decoupled)
      at::_foreach_mul_(ps, 1 - lr * wd);
    else
      gs = at::_foreach_add(gs, ps, wd);
  }
  at::_foreach_lerp_(m, gs, 1 - beta1);
  at::_foreach_mul_(v, beta2);
  at::_foreach_addcmul_(v, gs, gs, 1 - beta2);
  std::vector<at::Tensor> denom;
  if (amsgrad) {
    at::_foreach_maximum_(vmax, v);
    denom = at::_foreach_sqrt(vmax);
  } else {
    denom = at::_foreach_sqrt(v);
  }
  at::_foreach_div_(denom, bc2Sqrt);
  at::_foreach_add_(denom, eps);
  at::_foreach_addcdiv_(ps, m, denom, stepSizes);
}

// optimStep(optimizer, hyperparams: object per group)
DEFN(optimStep) {
  Optim* o = getOptim(a, 0);
  if (!a.has(1) || !a.info[1].IsArray()) a.fail(1, "hyperparams", "an array with one object per group");
  auto hs = a.info[1].As<Napi::Array>();
  if (hs.Length() != o->groups.size())
    throw ArgError("hyperparams has " + std::to_string(hs.Length()) + " entries, the optimizer has " + std::to_string(o->groups.size()) +
                   " groups");
  at::NoGradGuard ng;
  for (size_t g = 0; g < o->groups.size(); g++) {
    Napi::Value hv = hs.Get(uint32_t(g));
    if (!hv.IsObject()) throw ArgError("hyperparams[" + std::to_string(g) + "] must be an object");
    auto h = hv.As<Napi::Object>();
    if (o->kind == "sgd")
      sgdStep(*o, o->groups[g], h);
    else
      adamStep(*o, o->groups[g], h, o->kind == "adamw");
  }
  return a.env().Undefined();
}

// optimZeroGrad(optimizer, setToNone)
DEFN(optimZeroGrad) {
  Optim* o = getOptim(a, 0);
  bool none = !a.has(1) || a.B(1, "setToNone");
  for (auto& g : o->groups)
    for (auto& p : g.params) {
      at::Tensor& gr = p.mutable_grad();
      if (!gr.defined()) continue;
      if (none)
        gr.reset();
      else {
        if (gr.grad_fn())
          gr = gr.detach();
        else
          gr.requires_grad_(false);
        gr.zero_();
      }
    }
  return a.env().Undefined();
}

// optimGetState(optimizer) -> per group, per param {step, buf1?, buf2?, buf3?}
DEFN(optimGetState) {
  Optim* o = getOptim(a, 0);
  Napi::Env env = a.env();
  auto out = Napi::Array::New(env, o->groups.size());
  for (size_t g = 0; g < o->groups.size(); g++) {
    auto& G = o->groups[g];
    auto arr = Napi::Array::New(env, G.params.size());
    for (size_t i = 0; i < G.params.size(); i++) {
      auto e = Napi::Object::New(env);
      double step = double(G.steps[i]);
      if (i < G.stepT.size() && G.stepT[i].defined()) step = G.stepT[i].item<double>();  // the fused path's count
      e.Set("step", Napi::Number::New(env, step));
      if (G.buf1[i].defined()) e.Set("buf1", wrap(env, G.buf1[i]));
      if (G.buf2[i].defined()) e.Set("buf2", wrap(env, G.buf2[i]));
      if (G.buf3[i].defined()) e.Set("buf3", wrap(env, G.buf3[i]));
      arr.Set(uint32_t(i), e);
    }
    out.Set(uint32_t(g), arr);
  }
  return out;
}

// optimSetState(optimizer, same structure as optimGetState); buffers are copied (shapes checked).
DEFN(optimSetState) {
  Optim* o = getOptim(a, 0);
  if (!a.has(1) || !a.info[1].IsArray()) a.fail(1, "state", "an array per group");
  auto st = a.info[1].As<Napi::Array>();
  if (st.Length() != o->groups.size())
    throw ArgError("state has " + std::to_string(st.Length()) + " groups, the optimizer has " + std::to_string(o->groups.size()));
  // validate everything first, so a bad state changes nothing
  struct Pending {
    size_t g, i;
    int64_t step;
    at::Tensor b1, b2, b3;
  };
  std::vector<Pending> todo;
  for (size_t g = 0; g < o->groups.size(); g++) {
    auto& G = o->groups[g];
    Napi::Value gv = st.Get(uint32_t(g));
    if (!gv.IsArray() || gv.As<Napi::Array>().Length() != G.params.size())
      throw ArgError("state group " + std::to_string(g) + " must have one entry per parameter (" + std::to_string(G.params.size()) + ")");
    auto arr = gv.As<Napi::Array>();
    for (size_t i = 0; i < G.params.size(); i++) {
      Napi::Value ev = arr.Get(uint32_t(i));
      if (!ev.IsObject()) throw ArgError("state entry " + std::to_string(g) + "." + std::to_string(i) + " must be an object");
      auto e = ev.As<Napi::Object>();
      Pending p{g, i, exactInt(num(e, "step", 0), "state entry " + std::to_string(g) + "." + std::to_string(i) + " step"), {}, {}, {}};
      const char* keys[3] = {"buf1", "buf2", "buf3"};
      at::Tensor* dst[3] = {&p.b1, &p.b2, &p.b3};
      for (int k = 0; k < 3; k++) {
        Napi::Value bv = e.Get(keys[k]);
        if (bv.IsUndefined() || bv.IsNull()) continue;
        Handle* h = asHandle(a.env(), bv);
        if (!h || !h->alive)
          throw ArgError(std::string("state entry ") + std::to_string(g) + "." + std::to_string(i) + "." + keys[k] +
                         " must be a live Tensor");
        if (h->t.sizes() != G.params[i].sizes())
          throw ArgError("state entry " + std::to_string(g) + "." + std::to_string(i) + " has shape " + c10::str(h->t.sizes()) +
                         ", the parameter has " + c10::str(G.params[i].sizes()));
        *dst[k] = h->t;
      }
      todo.push_back(std::move(p));
    }
  }
  at::NoGradGuard ng;
  for (auto& p : todo) {
    auto& G = o->groups[p.g];
    const at::Tensor& par = G.params[p.i];
    G.steps[p.i] = p.step;
    if (p.i < G.stepT.size() && G.stepT[p.i].defined()) G.stepT[p.i].fill_(double(p.step));
    // into the existing buffer when it has the shape (a captured CUDA graph keeps using that memory);
    // a new buffer takes the parameter's layout (a channels-last weight gets a channels-last buffer, as
    // the fused kernels need)
    auto put = [&](at::Tensor& slot, const at::Tensor& src) {
      if (src.defined() && slot.defined() && slot.sizes() == src.sizes())
        slot.copy_(src.detach());
      else
        slot = src.defined() ? at::empty_like(par, at::MemoryFormat::Preserve).copy_(src.detach()) : at::Tensor();
    };
    put(G.buf1[p.i], p.b1);
    put(G.buf2[p.i], p.b2);
    put(G.buf3[p.i], p.b3);
  }
  return a.env().Undefined();
}

// clipGradNorm(params, maxNorm, normType, errorIfNonfinite) -> total norm (before clipping)
DEFN(clipGradNorm) {
  auto ps = a.TL(0, "parameters");
  double maxNorm = a.D(1, "maxNorm"), p = a.D(2, "normType");
  bool errorIfNonfinite = a.has(3) && a.B(3, "errorIfNonfinite");
  std::vector<at::Tensor> gs;
  for (auto& t : ps)
    if (t.grad().defined()) gs.push_back(t.grad());
  if (gs.empty()) return Napi::Number::New(a.env(), 0.0);
  at::NoGradGuard ng;
  auto norms = at::_foreach_norm(gs, p);
  at::Tensor total = std::isinf(p) ? at::stack(norms).max() : at::stack(norms).norm(p);
  double tn = total.item<double>();
  if (errorIfNonfinite && !std::isfinite(tn))
    throw std::runtime_error("the total norm of the gradients is non-finite (" + std::to_string(tn) + "), so it cannot be clipped");
  at::Tensor coef = (maxNorm / (total + 1e-6)).clamp_max(1.0);
  at::_foreach_mul_(gs, coef);
  return Napi::Number::New(a.env(), tn);
}

// unscaleGrads(params, invScale) -> true when any gradient is inf/nan (loss scaling for float16)
DEFN(unscaleGrads) {
  auto ps = a.TL(0, "parameters");
  double inv = a.D(1, "invScale");
  std::vector<at::Tensor> gs;
  for (auto& t : ps)
    if (t.grad().defined()) gs.push_back(t.grad());
  if (gs.empty()) return Napi::Boolean::New(a.env(), false);
  at::NoGradGuard ng;
  bool found = false;
  // group by device: the fused check needs one device per call
  std::map<std::string, std::vector<at::Tensor>> byDev;
  for (auto& g : gs) byDev[g.device().str()].push_back(g);
  for (auto& [dev, list] : byDev) {
    auto opts = at::TensorOptions().dtype(at::kFloat).device(list[0].device());
    at::Tensor foundInf = at::zeros({1}, opts);
    at::Tensor invT = at::full({1}, inv, opts);
    at::_amp_foreach_non_finite_check_and_unscale_(list, foundInf, invT);
    if (foundInf.item<float>() != 0) found = true;
  }
  return Napi::Boolean::New(a.env(), found);
}

// optimSetFused(optimizer, enabled) -> the previous setting: whether CUDA groups use the fused kernels.
DEFN(optimSetFused) {
  Optim* o = getOptim(a, 0);
  bool prev = o->fused;
  if (a.has(1)) o->fused = a.B(1, "enabled");
  return Napi::Boolean::New(a.env(), prev);
}

// optimSyncLr(optimizer, lrs: number per group): writes each CUDA group's lr into its device tensor,
// which a step inside a CUDA graph capture reads; call it before capturing and before each replay (a
// schedule changes the lr between steps). Groups on the CPU are skipped. Not allowed while capturing.
DEFN(optimSyncLr) {
  Optim* o = getOptim(a, 0);
  if (!a.has(1) || !a.info[1].IsArray()) a.fail(1, "lrs", "an array with one number per group");
  auto arr = a.info[1].As<Napi::Array>();
  if (arr.Length() != o->groups.size())
    throw ArgError("lrs has " + std::to_string(arr.Length()) + " entries, the optimizer has " + std::to_string(o->groups.size()) +
                   " groups");
  bool anyCuda = false;
  for (auto& G : o->groups) anyCuda = anyCuda || (!G.params.empty() && G.params[0].is_cuda());
  if (anyCuda && capturing())
    throw std::runtime_error(
        "optimSyncLr: called during a CUDA graph capture (the write would be captured); call it before capture and replay");
  std::vector<double> lrs;
  for (uint32_t g = 0; g < arr.Length(); g++) {
    Napi::Value v = arr.Get(g);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()) || v.As<Napi::Number>().DoubleValue() < 0)
      throw RangeArgError("lrs[" + std::to_string(g) + "] must be a finite number >= 0, got " +
                          (v.IsNumber() ? c10::str(v.As<Napi::Number>().DoubleValue()) : describe(v)));
    lrs.push_back(v.As<Napi::Number>().DoubleValue());
  }
  at::NoGradGuard ng;
  for (size_t g = 0; g < o->groups.size(); g++) {
    auto& G = o->groups[g];
    if (G.params.empty() || !G.params[0].is_cuda()) continue;
    if (!G.lrT.defined())
      G.lrT = at::full({}, lrs[g], G.params[0].options().dtype(at::kFloat));
    else if (G.lrValue != lrs[g])
      G.lrT.fill_(lrs[g]);
    G.lrValue = lrs[g];
  }
  return a.env().Undefined();
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kOptim[] = {
    ENTRY(optimCreate),    // (kind: string, groups: readonly (readonly Handle[])[]) => NativeOptimizer
    ENTRY(optimStep),      // (optimizer: NativeOptimizer, hyperparams: readonly Readonly<Record<string, number | boolean>>[]) => void
    ENTRY(optimZeroGrad),  // (optimizer: NativeOptimizer, setToNone?: boolean | null) => void
    ENTRY(optimGetState),  // (optimizer: NativeOptimizer) => OptimParamState[][]
    ENTRY(optimSetState),  // (optimizer: NativeOptimizer, state: readonly (readonly OptimParamState[])[]) => void
    ENTRY(clipGradNorm),   // (parameters: readonly Handle[], maxNorm: number, normType: number, errorIfNonfinite?: boolean | null) => number
    ENTRY(unscaleGrads),   // (parameters: readonly Handle[], invScale: number) => boolean
    ENTRY(optimSetFused),  // (optimizer: NativeOptimizer, enabled?: boolean | null) => boolean
    ENTRY(optimSyncLr),    // (optimizer: NativeOptimizer, lrs: readonly number[]) => void
};
// clang-format on

void initGraphs(Napi::Env env, Napi::Object exports);  // native/graphs.cpp

void initOptim(Napi::Env env, Napi::Object exports) {
  registerAll(env, exports, std::begin(kOptim), std::end(kOptim));
  // CUDA graphs register here so the shared addon.cpp/residual.h need no edit (see native/graphs.cpp)
  initGraphs(env, exports);
}

}  // namespace residual
