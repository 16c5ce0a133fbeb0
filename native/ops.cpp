// The op table. Each op is declared once, as one line: its JS name and the libtorch call, with its
// arguments read by position and name (the name appears in errors). The macro expands the table
// twice: once into functions, once into the registration list, so adding an op is adding a line.
//
// Why a hand-kept table rather than generating from native_functions.yaml: the JS API exposes a
// curated, PyTorch-named subset with JS-friendly argument forms (options objects, 'same' padding,
// scalars as numbers), and the TypeScript layer (lib/tensor/ and the tfjs kernels) maps each public
// function onto exactly one of these entries. A generator would bring ~2,000 schemas we neither test
// nor want to promise; a line per op keeps the binding thin and reviewable.
//
// Argument readers (residual.h): T tensor, OT optional tensor, TOS tensor-or-number (numbers become
// wrapped scalars, promoting as in Python), TL tensor list, S/OS scalar, D/OD double, I/OI integer,
// B bool, IL/OIL integer list, Str string, Dtype/ODtype dtype code, Opts(i) = dtype at i, device at i+1.
//
// The line's letter says what the op returns, and the compiler checks it (static_assert below):
// X one tensor, X2 two tensors, XL a list of tensors, XB a boolean, V nothing. From the letters and the
// readers, scripts/codegen/gen-native-types.mjs writes each op's TypeScript signature
// (lib/addon/binding.generated.ts): a reader `a.I(2, "dim")` is parameter 2, `dim: number`; an O*
// reader, or an `a.has(i)` test, makes parameter i optional. Helpers the table calls as `fooOp(a)` are
// read the same way, so keep their argument reads as `a.<reader>(index, "name")`.
#include "residual.h"

namespace residual {

// ---- checks libtorch does not make (or makes too late) --------------------------------------------

static bool isSignedInt(at::ScalarType t) { return t == at::kChar || t == at::kShort || t == at::kInt || t == at::kLong; }

static at::Scalar minOf(at::ScalarType t) {
  switch (t) {
    case at::kChar: return at::Scalar(int64_t(std::numeric_limits<int8_t>::min()));
    case at::kShort: return at::Scalar(int64_t(std::numeric_limits<int16_t>::min()));
    case at::kInt: return at::Scalar(int64_t(std::numeric_limits<int32_t>::min()));
    default: return at::Scalar(std::numeric_limits<int64_t>::min());
  }
}

// Integer division with a rounding mode ('trunc', 'floor') runs the CPU's integer divide, which traps on
// MIN / -1 (SIGFPE: the process dies). Refuse it up front. (Division by zero is refused by libtorch
// itself with "ZeroDivisionError", an ordinary error.) True division is floating point: nothing to do.
static void checkIntDivision(const at::Tensor& x, const at::Tensor& y, const std::optional<std::string>& mode) {
  if (!mode || !x.device().is_cpu()) return;
  at::ScalarType rt = at::result_type(x, y);
  if (!isSignedInt(rt)) return;
  at::NoGradGuard ng;
  at::Tensor overflow = at::logical_and(at::eq(x.to(rt), minOf(rt)), at::eq(y.to(rt), -1));
  if (overflow.any().item<bool>())
    throw RangeArgError("integer overflow: " + std::string(c10::toString(rt)) + " division of " + std::to_string(minOf(rt).toLong()) +
                        " by -1 has no " + std::string(c10::toString(rt)) + " result");
}
static at::Tensor divOp(const at::Tensor& x, const at::Tensor& y, const std::optional<std::string>& mode) {
  checkIntDivision(x, y, mode);
  return at::div(x, y, mode);
}
static void divOp_(const at::Tensor& x, const at::Tensor& y, const std::optional<std::string>& mode) {
  checkIntDivision(x, y, mode);
  x.div_(y, mode);
}

// Integers to negative integer powers: PyTorch refuses them (libtorch's kernels return 0 or garbage
// for tensor exponents and wrapped scalars). Refuse them whatever form the exponent takes.
static void checkIntPow(const at::Tensor& base, const at::Tensor& exponent) {
  if (!at::isIntegralType(base.scalar_type(), true) || !at::isIntegralType(exponent.scalar_type(), false)) return;
  if (!isSignedInt(exponent.scalar_type())) return;
  at::NoGradGuard ng;
  if (at::lt(exponent, 0).any().item<bool>()) throw KindError(ErrKind::Dtype, "Integers to negative integer powers are not allowed.");
}
static at::Tensor powOp(const at::Tensor& base, const at::Tensor& exponent) {
  checkIntPow(base, exponent);
  return at::pow(base, exponent);
}
static void powOp_(const at::Tensor& base, const at::Tensor& exponent) {
  checkIntPow(base, exponent);
  base.pow_(exponent);
}
static at::Tensor rpowOp(const at::Scalar& base, const at::Tensor& exponent) {
  if (base.isIntegral(true) && isSignedInt(exponent.scalar_type())) {
    at::NoGradGuard ng;
    if (at::lt(exponent, 0).any().item<bool>()) throw KindError(ErrKind::Dtype, "Integers to negative integer powers are not allowed.");
  }
  return at::pow(base, exponent);
}

// ---- random ops: each draws from its environment's generator (Args::gen) ------------------------------

static at::TensorOptions withDefaultDtype(at::TensorOptions o, at::ScalarType dflt) {
  if (!o.has_dtype()) o = o.dtype(dflt);
  return o;
}
static at::Tensor randOp(Args& a) {
  at::TensorOptions o = a.Opts(1);
  return at::rand(a.IL(0, "shape"), a.gen(o.device()), o);
}
static at::Tensor randnOp(Args& a) {
  at::TensorOptions o = a.Opts(1);
  return at::randn(a.IL(0, "shape"), a.gen(o.device()), o);
}
static at::Tensor randintOp(Args& a) {
  at::TensorOptions o = withDefaultDtype(a.Opts(3), at::kLong);
  return at::randint(a.I(0, "low"), a.I(1, "high"), a.IL(2, "shape"), a.gen(o.device()), o);
}
static at::Tensor randpermOp(Args& a) {
  at::TensorOptions o = withDefaultDtype(a.Opts(1), at::kLong);
  return at::randperm(a.I(0, "n"), a.gen(o.device()), o);
}
// As at::rand_like / at::randn_like (empty_like, then uniform_ / normal_), with the generator.
static at::Tensor randLikeOp(Args& a, bool normal) {
  at::Tensor x = a.T(0, "input");
  at::Tensor out = at::empty_like(x);
  if (normal)
    out.normal_(0, 1, a.gen(x.device()));
  else
    out.uniform_(0, 1, a.gen(x.device()));
  return out;
}
// As libtorch's composite dropout on the CPU (bernoulli noise scaled by 1/(1-p), multiplied in, so
// autograd sees a multiplication), with the generator; other devices use libtorch's fused kernel.
static at::Tensor dropoutOp(Args& a) {
  at::Tensor x = a.T(0, "input");
  double p = a.D(1, "p");
  bool train = a.B(2, "training");
  if (!x.device().is_cpu()) return at::dropout(x, p, train);
  TORCH_CHECK(p >= 0 && p <= 1, "dropout probability has to be between 0 and 1, but got ", p);
  if (p == 0 || !train || x.numel() == 0) return x;
  if (p == 1) return at::mul(x, at::zeros({}, x.options()));
  at::Tensor noise = at::empty_like(x);
  noise.bernoulli_(1 - p, a.gen(x.device()));
  noise.div_(1 - p);
  return at::mul(x, noise);
}

// ---- tfjs nn: helpers for lib/tfjs/kernels/nn.ts ------------------------------------------------------

// Checks what convolution_backward does not: that the gradient has the output shape of a convolution
// of `inShape` by `wShape` (the shapes come from JS; a mismatch would otherwise index out of range).
static void checkConvShapes(const at::Tensor& grad, at::IntArrayRef inShape, at::IntArrayRef wShape, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  size_t nd = inShape.size();
  TORCH_CHECK(nd >= 3 && nd <= 5 && grad.dim() == int64_t(nd) && wShape.size() == nd,
              "input, weight and gradient must have the same rank (3 to 5), got ", nd, ", ", wShape.size(), " and ", grad.dim());
  size_t ns = nd - 2;
  TORCH_CHECK(stride.size() == ns && padding.size() == ns && dilation.size() == ns, "stride, padding and dilation need ", ns,
              " entries each");
  TORCH_CHECK(groups >= 1 && inShape[0] >= 0 && wShape[0] >= 1 && inShape[1] == wShape[1] * groups && wShape[0] % groups == 0, "input ",
              inShape, " does not match weight ", wShape, " with groups=", groups);
  TORCH_CHECK(grad.size(0) == inShape[0] && grad.size(1) == wShape[0], "gradient ", grad.sizes(), " does not match input ", inShape,
              " and weight ", wShape);
  for (size_t i = 0; i < ns; i++) {
    TORCH_CHECK(stride[i] >= 1 && dilation[i] >= 1 && padding[i] >= 0 && wShape[i + 2] >= 1 && inShape[i + 2] >= 1,
                "stride and dilation must be >= 1, padding >= 0, sizes >= 1");
    int64_t span = inShape[i + 2] + 2 * padding[i] - dilation[i] * (wShape[i + 2] - 1) - 1;
    TORCH_CHECK(span >= 0 && grad.size(i + 2) == span / stride[i] + 1, "gradient ", grad.sizes(), " is not the output shape of input ",
                inShape, " and weight ", wShape);
  }
}
// The input gradient of a convolution (only the input's shape is needed: its memory is never read).
static at::Tensor convBackwardInputOp(Args& a) {
  at::Tensor g = a.T(0, "gradOutput"), w = a.T(1, "weight");
  std::vector<int64_t> shape = a.IL(2, "inputShape"), stride = a.IL(3, "stride"), padding = a.IL(4, "padding"),
                       dilation = a.IL(5, "dilation");
  int64_t groups = a.I(6, "groups");
  checkConvShapes(g, shape, w.sizes(), stride, padding, dilation, groups);
  at::Tensor input = at::empty(shape, g.options(), g.suggest_memory_format());
  std::vector<int64_t> outPad(shape.size() - 2, 0);
  return std::get<0>(
      at::convolution_backward(g, input, w, std::nullopt, stride, padding, dilation, false, outPad, groups, {true, false, false}));
}
// The weight gradient of a convolution (only the weight's shape is needed).
static at::Tensor convBackwardWeightOp(Args& a) {
  at::Tensor g = a.T(0, "gradOutput"), x = a.T(1, "input");
  std::vector<int64_t> shape = a.IL(2, "weightShape"), stride = a.IL(3, "stride"), padding = a.IL(4, "padding"),
                       dilation = a.IL(5, "dilation");
  int64_t groups = a.I(6, "groups");
  checkConvShapes(g, x.sizes(), shape, stride, padding, dilation, groups);
  at::Tensor w = at::zeros(shape, g.options());
  std::vector<int64_t> outPad(shape.size() - 2, 0);
  return std::get<1>(
      at::convolution_backward(g, x, w, std::nullopt, stride, padding, dilation, false, outPad, groups, {false, true, false}));
}
// Max-pool input gradient, recomputing the argmax from the input as TF's MaxPoolGrad does (first
// maximum of each window); 2-D or 3-D by the kernel size's length.
static at::Tensor maxPoolBackwardOp(Args& a) {
  at::Tensor g = a.T(0, "gradOutput"), x = a.T(1, "input");
  std::vector<int64_t> k = a.IL(2, "kernelSize"), s = a.IL(3, "stride"), p = a.IL(4, "padding"), d = a.IL(5, "dilation");
  bool ceil = a.B(6, "ceilMode");
  if (k.size() == 3) {
    at::Tensor idx = std::get<1>(at::max_pool3d_with_indices(x, k, s, p, d, ceil));
    return at::max_pool3d_with_indices_backward(g, x, k, s, p, d, ceil, idx);
  }
  at::Tensor idx = std::get<1>(at::max_pool2d_with_indices(x, k, s, p, d, ceil));
  return at::max_pool2d_with_indices_backward(g, x, k, s, p, d, ceil, idx);
}
static at::Tensor avgPoolBackwardOp(Args& a) {
  at::Tensor g = a.T(0, "gradOutput"), x = a.T(1, "input");
  std::vector<int64_t> k = a.IL(2, "kernelSize"), s = a.IL(3, "stride"), p = a.IL(4, "padding");
  bool ceil = a.B(5, "ceilMode"), countPad = a.B(6, "countIncludePad");
  std::optional<int64_t> div = a.OI(7, "divisorOverride");
  if (k.size() == 3) return at::avg_pool3d_backward(g, x, k, s, p, ceil, countPad, div);
  return at::avg_pool2d_backward(g, x, k, s, p, ceil, countPad, div);
}

// ---- tfjs math: helpers for the tfjs backend's kernels (lib/tfjs/kernels) ------------------------------

// tf's FFT/IFFT on the innermost dimension of a complex64 tensor, which the tfjs backend stores as a
// float32 tensor with a trailing dimension of 2 (real, imaginary: tf's interleaved layout); the result
// comes back in the same form. IFFT is scaled by 1/n, as tf's.
static at::Tensor fftInterleaved(const at::Tensor& x, bool inverse) {
  TORCH_CHECK(x.dim() >= 2 && x.size(-1) == 2 && x.scalar_type() == at::kFloat,
              "fft: expected a float32 tensor whose last dimension is 2 (real, imaginary), got ", x.sizes(), " ", x.scalar_type());
  at::NoGradGuard ng;
  at::Tensor c = at::view_as_complex(x.contiguous());
  return at::view_as_real(inverse ? at::fft_ifft(c) : at::fft_fft(c)).contiguous();
}
// index_put with a list of optional index tensors (null: the whole dimension). libtorch hits an
// internal assert ("ntensor >= 3") when no index tensor is given: say what is wrong instead.
static at::Tensor indexPutOp(Args& a) {
  at::Tensor x = a.T(0, "input");
  std::vector<std::optional<at::Tensor>> idx = a.OTL(1, "indices");
  bool any = false;
  for (const auto& t : idx) any = any || (t.has_value() && t->defined());
  if (!any)
    throw ArgError("argument 'indices' must hold at least one index tensor (got " + std::to_string(idx.size()) +
                   " entries, none a tensor)");
  return x.index_put(c10::List<std::optional<at::Tensor>>(idx), a.T(2, "values"), a.B(3, "accumulate"));
}

#define A_ a.T(0, "input")
#define RED(reduction) a.I(reduction, "reduction")

// The op table is one line per op, however long (read by scripts/codegen/gen-native-types.mjs).
// clang-format off
// X(name, expression returning a tensor), X2 (two tensors), XL (a list of tensors), XB (a boolean);
// V(name, statement with no result)
#define RESIDUAL_OPS(X, V, X2, XL, XB)                                                                              \
  /* creation */                                                                                        \
  X(zeros, at::zeros(a.IL(0, "shape"), a.Opts(1)))                                                      \
  X(ones, at::ones(a.IL(0, "shape"), a.Opts(1)))                                                        \
  X(empty, at::empty(a.IL(0, "shape"), a.Opts(1)))                                                      \
  X(full, at::full(a.IL(0, "shape"), a.S(1, "value"), a.Opts(2)))                                       \
  X(scalarTensor, at::scalar_tensor(a.S(0, "value"), a.Opts(1)))                                        \
  X(arange, at::arange(a.S(0, "start"), a.S(1, "end"), a.S(2, "step"), a.Opts(3)))                     \
  X(linspace, at::linspace(a.S(0, "start"), a.S(1, "end"), a.I(2, "steps"), a.Opts(3)))                \
  X(rand, randOp(a))                                                                                    \
  X(randn, randnOp(a))                                                                                  \
  X(randint, randintOp(a))                                                                              \
  X(randperm, randpermOp(a))                                                                            \
  X(zerosLike, at::zeros_like(A_))                                                                      \
  X(onesLike, at::ones_like(A_))                                                                        \
  X(fullLike, at::full_like(A_, a.S(1, "value")))                                                       \
  X(randLike, randLikeOp(a, false))                                                                     \
  X(randnLike, randLikeOp(a, true))                                                                     \
  X(emptyLike, at::empty_like(A_))                                                                      \
  X(eye, at::eye(a.I(0, "n"), a.Opts(1)))                                                               \
  /* conversion, copies */                                                                              \
  X(to, A_.to(a.Opts(1), a.has(3) && a.B(3, "nonBlocking"), a.has(4) && a.B(4, "copy")))                \
  X(toMemoryFormat, A_.contiguous(a.B(1, "channelsLast") ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous)) \
  X(pinMemory, A_.pin_memory())                                                                         \
  X(contiguous, A_.contiguous())                                                                        \
  X(clone, A_.clone())                                                                                  \
  X(detach, A_.detach())                                                                                \
  V(detach_, A_.detach_())                                                                              \
  /* views and joins */                                                                                 \
  X(reshape, A_.reshape(a.IL(1, "shape")))                                                              \
  X(view, A_.view(a.IL(1, "shape")))                                                                    \
  X(permute, A_.permute(a.IL(1, "dims")))                                                               \
  X(transpose, A_.transpose(a.I(1, "dim0"), a.I(2, "dim1")))                                            \
  X(flatten, A_.flatten(a.I(1, "startDim"), a.I(2, "endDim")))                                          \
  X(squeeze, a.has(1) ? A_.squeeze(a.IL(1, "dim")) : A_.squeeze())                                     \
  X(unsqueeze, A_.unsqueeze(a.I(1, "dim")))                                                             \
  X(narrow, A_.narrow(a.I(1, "dim"), a.I(2, "start"), a.I(3, "length")))                               \
  X(select, A_.select(a.I(1, "dim"), a.I(2, "index")))                                                  \
  X(slice, A_.slice(a.I(1, "dim"), a.OI(2, "start"), a.OI(3, "end"), a.I(4, "step")))                  \
  X(indexSelect, A_.index_select(a.I(1, "dim"), a.T(2, "index")))                                       \
  X(indexTensors, at::index(A_, c10::List<std::optional<at::Tensor>>(a.OTL(1, "indices"))))             \
  X(gather, A_.gather(a.I(1, "dim"), a.T(2, "index")))                                                  \
  X(maskedFill, A_.masked_fill(a.T(1, "mask"), a.S(2, "value")))                                        \
  X(expand, A_.expand(a.IL(1, "shape")))                                                                \
  X(repeat, A_.repeat(a.IL(1, "repeats")))                                                              \
  X(flip, A_.flip(a.IL(1, "dims")))                                                                     \
  X(cat, at::cat(a.TL(0, "tensors"), a.I(1, "dim")))                                                    \
  X(stack, at::stack(a.TL(0, "tensors"), a.I(1, "dim")))                                                \
  XL(chunk, A_.chunk(a.I(1, "chunks"), a.I(2, "dim")))                                                   \
  XL(split, A_.split(a.I(1, "splitSize"), a.I(2, "dim")))                                                \
  XL(splitWithSizes, A_.split_with_sizes(a.IL(1, "splitSizes"), a.I(2, "dim")))                          \
  X(pad, at::pad(A_, a.IL(1, "pad"), a.Str(2, "mode"), a.OD(3, "value")))                               \
  /* elementwise */                                                                                     \
  X(add, at::add(A_, a.TOS(1, "other"), a.S(2, "alpha")))                                               \
  X(sub, at::sub(A_, a.TOS(1, "other"), a.S(2, "alpha")))                                               \
  X(mul, at::mul(A_, a.TOS(1, "other")))                                                                \
  X(div, divOp(A_, a.TOS(1, "other"), a.OStr(2, "roundingMode")))                                      \
  X(pow, powOp(A_, a.TOS(1, "exponent")))                                                               \
  X(rpow, rpowOp(a.S(0, "base"), a.T(1, "exponent")))                                                   \
  X(maximum, at::maximum(A_, a.T(1, "other")))                                                          \
  X(minimum, at::minimum(A_, a.T(1, "other")))                                                          \
  X(neg, at::neg(A_))                                                                                   \
  X(sqrt, at::sqrt(A_))                                                                                 \
  X(rsqrt, at::rsqrt(A_))                                                                               \
  X(exp, at::exp(A_))                                                                                   \
  X(log, at::log(A_))                                                                                   \
  X(abs, at::abs(A_))                                                                                   \
  X(sign, at::sign(A_))                                                                                 \
  X(floor, at::floor(A_))                                                                               \
  X(ceil, at::ceil(A_))                                                                                 \
  X(round, at::round(A_))                                                                               \
  X(sigmoid, at::sigmoid(A_))                                                                           \
  X(tanh, at::tanh(A_))                                                                                 \
  X(sin, at::sin(A_))                                                                                   \
  X(cos, at::cos(A_))                                                                                   \
  X(reciprocal, at::reciprocal(A_))                                                                     \
  X(clamp, at::clamp(A_, a.OS(1, "min"), a.OS(2, "max")))                                               \
  X(lerp, at::lerp(A_, a.T(1, "end"), a.S(2, "weight")))                                                \
  /* in place */                                                                                        \
  V(add_, A_.add_(a.TOS(1, "other"), a.S(2, "alpha")))                                                  \
  V(sub_, A_.sub_(a.TOS(1, "other"), a.S(2, "alpha")))                                                  \
  V(mul_, A_.mul_(a.TOS(1, "other")))                                                                   \
  V(div_, divOp_(A_, a.TOS(1, "other"), a.OStr(2, "roundingMode")))                                    \
  V(pow_, powOp_(A_, a.TOS(1, "exponent")))                                                             \
  V(neg_, A_.neg_())                                                                                    \
  V(sqrt_, A_.sqrt_())                                                                                  \
  V(exp_, A_.exp_())                                                                                    \
  V(log_, A_.log_())                                                                                    \
  V(abs_, A_.abs_())                                                                                    \
  V(clamp_, A_.clamp_(a.OS(1, "min"), a.OS(2, "max")))                                                  \
  V(relu_, A_.relu_())                                                                                  \
  V(zero_, A_.zero_())                                                                                  \
  V(fill_, A_.fill_(a.S(1, "value")))                                                                   \
  V(copy_, A_.copy_(a.T(1, "src"), a.has(2) && a.B(2, "nonBlocking")))                                  \
  V(uniform_, A_.uniform_(a.D(1, "from"), a.D(2, "to"), a.gen(A_.device())))                            \
  V(normal_, A_.normal_(a.D(1, "mean"), a.D(2, "std"), a.gen(A_.device())))                             \
  V(bernoulli_, A_.bernoulli_(a.D(1, "p"), a.gen(A_.device())))                                         \
  /* reductions */                                                                                      \
  X(sum, a.has(1) ? at::sum(A_, a.OIL(1, "dim"), a.B(2, "keepdim"), a.ODtype(3, "dtype")) : at::sum(A_, a.ODtype(3, "dtype"))) \
  X(mean, a.has(1) ? at::mean(A_, a.OIL(1, "dim"), a.B(2, "keepdim"), a.ODtype(3, "dtype")) : at::mean(A_, a.ODtype(3, "dtype"))) \
  X(prod, a.has(1) ? at::prod(A_, a.I(1, "dim"), a.B(2, "keepdim")) : at::prod(A_))                    \
  X(amax, at::amax(A_, a.IL(1, "dim"), a.B(2, "keepdim")))                                              \
  X(amin, at::amin(A_, a.IL(1, "dim"), a.B(2, "keepdim")))                                              \
  X(maxAll, at::max(A_))                                                                                \
  X(minAll, at::min(A_))                                                                                \
  X2(maxDim, at::max(A_, a.I(1, "dim"), a.B(2, "keepdim")))                                              \
  X2(minDim, at::min(A_, a.I(1, "dim"), a.B(2, "keepdim")))                                              \
  X(argmax, at::argmax(A_, a.OI(1, "dim"), a.B(2, "keepdim")))                                          \
  X(argmin, at::argmin(A_, a.OI(1, "dim"), a.B(2, "keepdim")))                                          \
  X(var, at::var(A_, a.OIL(1, "dim"), a.OS(2, "correction"), a.B(3, "keepdim")))                        \
  X(std, at::std(A_, a.OIL(1, "dim"), a.OS(2, "correction"), a.B(3, "keepdim")))                        \
  X(norm, a.has(2) ? at::norm(A_, a.OS(1, "p"), a.IL(2, "dim"), a.B(3, "keepdim")) : at::norm(A_, a.S(1, "p"))) \
  X(logsumexp, at::logsumexp(A_, a.IL(1, "dim"), a.B(2, "keepdim")))                                    \
  X(all, at::all(A_))                                                                                   \
  X(any, at::any(A_))                                                                                   \
  X2(topk, at::topk(A_, a.I(1, "k"), a.I(2, "dim"), a.B(3, "largest"), a.B(4, "sorted")))               \
  X2(sort, at::sort(A_, a.I(1, "dim"), a.B(2, "descending")))                                            \
  X(cumsum, at::cumsum(A_, a.I(1, "dim")))                                                              \
  /* comparisons and selection */                                                                       \
  X(eq, at::eq(A_, a.TOS(1, "other")))                                                                  \
  X(ne, at::ne(A_, a.TOS(1, "other")))                                                                  \
  X(lt, at::lt(A_, a.TOS(1, "other")))                                                                  \
  X(le, at::le(A_, a.TOS(1, "other")))                                                                  \
  X(gt, at::gt(A_, a.TOS(1, "other")))                                                                  \
  X(ge, at::ge(A_, a.TOS(1, "other")))                                                                  \
  X(logicalNot, at::logical_not(A_))                                                                    \
  X(logicalAnd, at::logical_and(A_, a.T(1, "other")))                                                   \
  X(logicalOr, at::logical_or(A_, a.T(1, "other")))                                                     \
  X(isnan, at::isnan(A_))                                                                               \
  X(isfinite, at::isfinite(A_))                                                                         \
  XB(equal, at::equal(A_, a.T(1, "other")))                                                              \
  XB(allclose, at::allclose(A_, a.T(1, "other"), a.D(2, "rtol"), a.D(3, "atol"), a.B(4, "equalNan")))  \
  X(where, at::where(a.T(0, "condition"), a.TOS(1, "input"), a.TOS(2, "other")))                       \
  /* linear algebra */                                                                                  \
  X(matmul, at::matmul(A_, a.T(1, "other")))                                                            \
  X(mm, at::mm(A_, a.T(1, "mat2")))                                                                     \
  X(bmm, at::bmm(A_, a.T(1, "mat2")))                                                                   \
  X(outer, at::outer(A_, a.T(1, "vec2")))                                                               \
  /* tfjs nn (lib/tfjs/kernels/nn.ts) */                                                                 \
  X(convolution, at::convolution(A_, a.T(1, "weight"), a.OT(2, "bias"), a.IL(3, "stride"), a.IL(4, "padding"), a.IL(5, "dilation"), a.B(6, "transposed"), a.IL(7, "outputPadding"), a.I(8, "groups"))) \
  X(convolutionBackwardInput, convBackwardInputOp(a))                                                   \
  X(convolutionBackwardWeight, convBackwardWeightOp(a))                                                 \
  X(maxPool3d, at::max_pool3d(A_, a.IL(1, "kernelSize"), a.IL(2, "stride"), a.IL(3, "padding"), a.IL(4, "dilation"), a.B(5, "ceilMode"))) \
  X(avgPool3d, at::avg_pool3d(A_, a.IL(1, "kernelSize"), a.IL(2, "stride"), a.IL(3, "padding"), a.B(4, "ceilMode"), a.B(5, "countIncludePad"), a.OI(6, "divisorOverride"))) \
  X(maxPoolBackward, maxPoolBackwardOp(a))                                                              \
  X(avgPoolBackward, avgPoolBackwardOp(a))                                                              \
  X(elu, at::elu(A_, a.S(1, "alpha")))                                                                  \
  X(eluBackwardFromResult, at::elu_backward(a.T(0, "gradOutput"), a.S(2, "alpha"), 1, 1, true, a.T(1, "result"))) \
  X(selu, at::selu(A_))                                                                                 \
  X(softplus, at::softplus(A_, a.S(1, "beta"), a.S(2, "threshold")))                                    \
  X(addcmul, at::addcmul(A_, a.T(1, "tensor1"), a.T(2, "tensor2"), a.S(3, "value")))                    \
  X(indexAdd, at::index_add(A_, a.I(1, "dim"), a.T(2, "index"), a.T(3, "source")))                     \
  X(scatterAdd, at::scatter_add(A_, a.I(1, "dim"), a.T(2, "index"), a.T(3, "src")))                     \
  X(unfold, A_.unfold(a.I(1, "dim"), a.I(2, "size"), a.I(3, "step")))                                   \
  /* neural network ops */                                                                              \
  X(conv2d, at::conv2d(A_, a.T(1, "weight"), a.OT(2, "bias"), a.IL(3, "stride"), a.IL(4, "padding"), a.IL(5, "dilation"), a.I(6, "groups"))) \
  X(conv2dPadMode, at::conv2d(A_, a.T(1, "weight"), a.OT(2, "bias"), a.IL(3, "stride"), a.Str(4, "padding"), a.IL(5, "dilation"), a.I(6, "groups"))) \
  X(batchNorm, at::batch_norm(A_, a.OT(1, "weight"), a.OT(2, "bias"), a.OT(3, "runningMean"), a.OT(4, "runningVar"), a.B(5, "training"), a.D(6, "momentum"), a.D(7, "eps"), true)) \
  X(relu, at::relu(A_))                                                                                 \
  X(leakyRelu, at::leaky_relu(A_, a.S(1, "negativeSlope")))                                             \
  X(gelu, at::gelu(A_))                                                                                 \
  X(silu, at::silu(A_))                                                                                 \
  X(maxPool2d, at::max_pool2d(A_, a.IL(1, "kernelSize"), a.IL(2, "stride"), a.IL(3, "padding"), a.IL(4, "dilation"), a.B(5, "ceilMode"))) \
  X(avgPool2d, at::avg_pool2d(A_, a.IL(1, "kernelSize"), a.IL(2, "stride"), a.IL(3, "padding"), a.B(4, "ceilMode"), a.B(5, "countIncludePad"), a.OI(6, "divisorOverride"))) \
  X(adaptiveAvgPool2d, at::adaptive_avg_pool2d(A_, a.IL(1, "outputSize")))                              \
  X(adaptiveMaxPool2d, std::get<0>(at::adaptive_max_pool2d(A_, a.IL(1, "outputSize"))))                 \
  X(linear, at::linear(A_, a.T(1, "weight"), a.OT(2, "bias")))                                          \
  X(dropout, dropoutOp(a))                                                                              \
  X(softmax, at::softmax(A_, a.I(1, "dim"), a.ODtype(2, "dtype")))                                      \
  X(logSoftmax, at::log_softmax(A_, a.I(1, "dim"), a.ODtype(2, "dtype")))                               \
  X(crossEntropy, at::cross_entropy_loss(A_, a.T(1, "target"), a.OT(2, "weight"), RED(3), a.I(4, "ignoreIndex"), a.D(5, "labelSmoothing"))) \
  X(nllLoss, at::nll_loss_nd(A_, a.T(1, "target"), a.OT(2, "weight"), RED(3), a.I(4, "ignoreIndex")))   \
  X(mseLoss, at::mse_loss(A_, a.T(1, "target"), RED(2)))                                                \
  X(oneHot, at::one_hot(A_, a.I(1, "numClasses")))                                                      \
  /* tfjs math */                                                                                       \
  X(acos, at::acos(A_))                                                                                 \
  X(acosh, at::acosh(A_))                                                                               \
  X(asin, at::asin(A_))                                                                                 \
  X(asinh, at::asinh(A_))                                                                               \
  X(atan, at::atan(A_))                                                                                 \
  X(atan2, at::atan2(A_, a.T(1, "other")))                                                              \
  X(atanh, at::atanh(A_))                                                                               \
  X(cosh, at::cosh(A_))                                                                                 \
  X(sinh, at::sinh(A_))                                                                                 \
  X(tan, at::tan(A_))                                                                                   \
  X(erf, at::erf(A_))                                                                                   \
  X(expm1, at::expm1(A_))                                                                               \
  X(log1p, at::log1p(A_))                                                                               \
  X(isinf, at::isinf(A_))                                                                               \
  X(fmod, at::fmod(A_, a.TOS(1, "other")))                                                              \
  X(cumprod, at::cumprod(A_, a.I(1, "dim")))                                                            \
  X(allDim, at::all(A_, a.I(1, "dim"), a.B(2, "keepdim")))                                              \
  X(anyDim, at::any(A_, a.I(1, "dim"), a.B(2, "keepdim")))                                              \
  X(bitwiseAnd, at::bitwise_and(A_, a.T(1, "other")))                                                   \
  X(logicalXor, at::logical_xor(A_, a.T(1, "other")))                                                   \
  X2(sortStable, at::sort(A_, std::optional<bool>(true), a.I(1, "dim"), a.B(2, "descending")))          \
  X(indexPut, indexPutOp(a))                                                                           \
  X(einsum, at::einsum(a.Str(0, "equation"), a.TL(1, "tensors")))                                      \
  X(diag, at::diag(A_, a.I(1, "diagonal")))                                                             \
  X(searchsorted, at::searchsorted(A_, a.T(1, "values"), a.B(2, "outInt32"), a.B(3, "right")))         \
  X(multinomial, at::multinomial(A_, a.I(1, "numSamples"), a.B(2, "replacement"), a.gen(A_.device()))) \
  X(fftInterleaved, fftInterleaved(A_, a.B(1, "inverse")))                                          \
  X2(maxPool2dWithIndices, at::max_pool2d_with_indices(A_, a.IL(1, "kernelSize"), a.IL(2, "stride"), a.IL(3, "padding"), a.IL(4, "dilation"), a.B(5, "ceilMode")))

// clang-format on

// Each letter's result type, checked at compile time so the generated TypeScript signature cannot lie.
using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using TensorList = std::vector<at::Tensor>;
#define RESIDUAL_DEF_R(name, expr, Want)                                                      \
  static constexpr char op_##name##_name[] = #name;                                           \
  static Napi::Value op_##name(Args& a) {                                                     \
    auto&& r = (expr);                                                                        \
    static_assert(std::is_same_v<std::decay_t<decltype(r)>, Want>,                            \
                  "op " #name ": its letter in the op table does not match what it returns"); \
    return wrap(a.env(), r);                                                                  \
  }
#define RESIDUAL_DEF_X(name, expr) RESIDUAL_DEF_R(name, expr, at::Tensor)
#define RESIDUAL_DEF_X2(name, expr) RESIDUAL_DEF_R(name, expr, TensorPair)
#define RESIDUAL_DEF_XL(name, expr) RESIDUAL_DEF_R(name, expr, TensorList)
#define RESIDUAL_DEF_XB(name, expr) RESIDUAL_DEF_R(name, expr, bool)
#define RESIDUAL_DEF_V(name, stmt)                  \
  static constexpr char op_##name##_name[] = #name; \
  static Napi::Value op_##name(Args& a) {           \
    stmt;                                           \
    return a.env().Undefined();                     \
  }
RESIDUAL_OPS(RESIDUAL_DEF_X, RESIDUAL_DEF_V, RESIDUAL_DEF_X2, RESIDUAL_DEF_XL, RESIDUAL_DEF_XB)

#define RESIDUAL_REG(name, expr) FnEntry{#name, &entry<&op_##name, op_##name##_name>},
static const FnEntry kOps[] = {RESIDUAL_OPS(RESIDUAL_REG, RESIDUAL_REG, RESIDUAL_REG, RESIDUAL_REG, RESIDUAL_REG)};

// The op names, so the TS layer (and tests) can check that every op it maps exists natively.
static constexpr char opNames_name[] = "opNames";
static Napi::Value fn_opNames(Args& a) {
  auto arr = Napi::Array::New(a.env(), std::size(kOps));
  for (size_t i = 0; i < std::size(kOps); i++) arr.Set(uint32_t(i), Napi::String::New(a.env(), kOps[i].name));
  return arr;
}

// ---- tfjs math: toBufferAsync ----------------------------------------------------------------------------

// toBufferAsync(t) -> Promise<ArrayBuffer>: toBuffer's copy (to the CPU, contiguous, never a view) made
// on a libuv worker thread, so reading a large or CUDA tensor does not block the event loop (the tfjs
// backend's read()). The worker holds its own reference to the tensor, so disposing the JS handle
// meanwhile is safe. A failure rejects with the error rethrow() makes for it (the usual classes).
static void freeAsyncBox(napi_env, void*, void* hint) { delete static_cast<at::Tensor*>(hint); }
class ToBufferWorker : public Napi::AsyncWorker {
 public:
  ToBufferWorker(Napi::Env env, at::Tensor t) : Napi::AsyncWorker(env), src(std::move(t)), deferred(Napi::Promise::Deferred::New(env)) {}
  void Execute() override {
    try {
      at::NoGradGuard ng;
      at::Tensor c = src.detach().to(at::kCPU).contiguous();
      if (c.numel() > 0 && c.has_storage() && src.has_storage() && c.storage().is_alias_of(src.storage())) c = c.clone();
      out = std::move(c);
    } catch (...) {
      failure = std::current_exception();
    }
    src = at::Tensor();
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      Napi::HandleScope hs(env);
      if (failure) std::rethrow_exception(failure);
      if (out.numel() == 0) {
        deferred.Resolve(Napi::ArrayBuffer::New(env, 0));
        return;
      }
      auto* box = new at::Tensor(std::move(out));
      napi_value ab = nullptr;
      napi_status st = napi_create_external_arraybuffer(env, box->data_ptr(), box->nbytes(), freeAsyncBox, box, &ab);
      if (st == napi_ok) {
        deferred.Resolve(Napi::Value(env, ab));
        return;
      }
      std::unique_ptr<at::Tensor> owned(box);
      bool pending = false;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending) throw Napi::Error();
      auto copy = Napi::ArrayBuffer::New(env, owned->nbytes());  // runtimes that forbid external buffers
      std::memcpy(copy.Data(), owned->data_ptr(), owned->nbytes());
      deferred.Resolve(copy);
    } catch (...) {
      reject(env);
    }
  }
  void OnError(const Napi::Error&) override { reject(Env()); }
  Napi::Promise promise() const { return deferred.Promise(); }

 private:
  // The current exception (or a pending JS one) as the promise's rejection, built by rethrow().
  void reject(Napi::Env env) noexcept {
    try {
      bool pending = false;
      if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) {
        try {
          if (failure) std::rethrow_exception(failure);
          throw std::runtime_error("toBufferAsync failed");
        } catch (...) {
          rethrow(env, "toBufferAsync");
        }
      }
      napi_value err = nullptr;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok && err) deferred.Reject(Napi::Value(env, err));
    } catch (...) {}
  }
  at::Tensor src, out;
  std::exception_ptr failure;
  Napi::Promise::Deferred deferred;
};
DEFN(toBufferAsync) {
  Napi::Env env = a.env();
  at::Tensor t = a.T(0, "tensor");
  checkFitsArrayBuffer(env, t);
  auto* w = new ToBufferWorker(env, t);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

void initOps(Napi::Env env, Napi::Object exports) {
  registerAll(env, exports, std::begin(kOps), std::end(kOps));
  exports.Set("opNames", Napi::Function::New(env, &entry<&fn_opNames, opNames_name>, "opNames"));  // () => string[]
  // clang-format off
  exports.Set("toBufferAsync", Napi::Function::New(env, &entry<&fn_toBufferAsync, toBufferAsync_name>, "toBufferAsync"));  // (tensor: Handle) => Promise<ArrayBuffer>
  // clang-format on
}

}  // namespace residual
