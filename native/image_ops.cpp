// The image library (native/image/) for JS: decode a file's bytes, the loaders' resized crop and
// RandomResizedCrop boxes (exposed for the parity tests), and a shard's header scan.
#include "residual.h"

#include "image/codec.h"
#include "image/crop.h"
#include "image/resample.h"
#include "image/splitmix.h"
#include "image/tar.h"
#include "options.h"

namespace residual {

using namespace residual::image;

// imageDecode(bytes: Uint8Array, channels 1|3|4, options?: {maxPixels, maxFileBytes}) -> uint8 [H, W, C]
DEFN(imageDecode) {
  if (!a.has(0) || !a.info[0].IsTypedArray()) a.fail(0, "bytes", "a Uint8Array");
  auto ta = a.info[0].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) a.fail(0, "bytes", "a Uint8Array");
  auto u8 = a.info[0].As<Napi::Uint8Array>();
  int channels = int(a.I(1, "channels"));
  if (channels != 1 && channels != 3 && channels != 4)
    throw RangeArgError("argument 'channels' must be 1, 3 or 4, got " + std::to_string(channels));
  Limits lim = readLimits(Options(a.has(2) ? a.info[2] : a.env().Undefined(), "options", true));
  Image im;
  decodeImage(u8.Data(), u8.ElementLength(), channels, lim, nullptr, im);
  at::Tensor t = at::empty({im.h, im.w, im.c}, at::kByte);
  uint8_t* d = t.data_ptr<uint8_t>();
  for (int64_t y = 0; y < im.h; y++) std::memcpy(d + y * im.w * im.c, im.px.data() + y * im.stride, size_t(im.w * im.c));
  return wrap(a.env(), t);
}

// imageResizedCrop(uint8 [H, W, C], [i, j, h, w], [outH, outW], flip) -> float32 [C, outH, outW], 0..255:
// torchvision's resized_crop(..., antialias=True) on the same box (the loader's geometry, exposed for tests).
DEFN(imageResizedCrop) {
  at::Tensor src = a.T(0, "image").contiguous();
  if (src.dim() != 3 || src.scalar_type() != at::kByte || src.device().is_cuda())
    throw ArgError("image must be a CPU uint8 tensor [H, W, C]");
  auto box = a.IL(1, "box");
  auto size = a.IL(2, "size");
  bool flip = a.has(3) && a.B(3, "flip");
  if (box.size() != 4 || size.size() != 2) throw ArgError("box is [i, j, h, w] and size [outH, outW]");
  Image im;
  im.fullH = im.h = src.size(0);
  im.fullW = im.w = src.size(1);
  im.c = src.size(2);
  im.stride = im.w * im.c;
  Box b{box[0], box[1], box[2], box[3]};
  if (b.i < 0 || b.j < 0 || b.h < 1 || b.w < 1 || b.i + b.h > im.h || b.j + b.w > im.w)
    throw RangeArgError("the box must lie inside the image");
  if (size[0] < 1 || size[1] < 1 || size[0] > 8192 || size[1] > 8192) throw RangeArgError("size must be in 1..8192");
  im.px.assign(src.data_ptr<uint8_t>(), src.data_ptr<uint8_t>() + src.numel());
  at::Tensor out = at::empty({im.c, size[0], size[1]}, at::kFloat);
  std::vector<float> scale(size_t(im.c), 1.f), shift(size_t(im.c), 0.f);
  resizedCrop(im, b, size[0], size[1], 0, 0, size[0], size[1], flip, scale.data(), shift.data(), out.data_ptr<float>());
  return wrap(a.env(), out);
}

// imageRrcBoxes(H, W, seed, count, [scaleLo, scaleHi, ratioLo, ratioHi]) -> Float64Array of count * 4 (i, j, h, w)
DEFN(imageRrcBoxes) {
  int64_t H = a.I(0, "height"), W = a.I(1, "width"), count = a.I(3, "count");
  int64_t seed = a.I(2, "seed");
  if (seed < 0) throw RangeArgError("argument 'seed' must be non-negative, got " + std::to_string(seed));
  uint64_t r = uint64_t(seed);
  if (H < 1 || W < 1 || H > kMaxSide || W > kMaxSide) throw RangeArgError("height and width must be in 1.." + std::to_string(kMaxSide));
  if (count < 0 || count > (1 << 24)) throw RangeArgError("argument 'count' must be in 0..2^24");
  RrcParams p;
  if (a.has(4)) {
    if (!a.info[4].IsArray()) a.fail(4, "params", "an array [scaleLo, scaleHi, ratioLo, ratioHi]");
    auto v = a.info[4].As<Napi::Array>();
    if (v.Length() != 4) throw ArgError("params are [scaleLo, scaleHi, ratioLo, ratioHi]");
    double q[4];
    for (uint32_t k = 0; k < 4; k++) {
      Napi::Value e = v.Get(k);
      if (!e.IsNumber()) throw ArgError("params must be numbers");
      q[k] = e.As<Napi::Number>().DoubleValue();
    }
    p.scaleLo = q[0];
    p.scaleHi = q[1];
    p.ratioLo = q[2];
    p.ratioHi = q[3];
    if (!(p.scaleLo > 0 && p.scaleLo <= p.scaleHi && p.scaleHi <= 1 && p.ratioLo > 0 && p.ratioLo <= p.ratioHi && std::isfinite(p.ratioHi)))
      throw RangeArgError("params must have 0 < scaleLo <= scaleHi <= 1 and 0 < ratioLo <= ratioHi");
  }
  auto out = Napi::Float64Array::New(a.env(), size_t(count * 4));
  r = mix(r);
  for (int64_t k = 0; k < count; k++) {
    Box b = rrcBox(H, W, p, r);
    out[size_t(4 * k)] = double(b.i);
    out[size_t(4 * k + 1)] = double(b.j);
    out[size_t(4 * k + 2)] = double(b.h);
    out[size_t(4 * k + 3)] = double(b.w);
  }
  return out;
}

// tarScan(path, options?: {maxFileBytes}) -> { samples, maxLabel, members }: counts samples (keys with an
// image) by reading the headers (and .cls members) only.
DEFN(tarScan) {
  std::string path = a.Str(0, "path");
  Limits lim = readLimits(Options(a.has(1) ? a.info[1] : a.env().Undefined(), "options", true));
  TarSummary s = scanTar(path, lim);
  auto o = Napi::Object::New(a.env());
  o.Set("samples", Napi::Number::New(a.env(), double(s.samples)));
  o.Set("maxLabel", Napi::Number::New(a.env(), double(s.maxLabel)));
  o.Set("members", Napi::Number::New(a.env(), double(s.members)));
  return o;
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kImageOps[] = {
    ENTRY(imageDecode),       // (bytes: Uint8Array, channels: number, options?: ImageLimits | null) => Handle
    ENTRY(imageResizedCrop),  // (image: Handle, box: IntList, size: IntList, flip?: boolean | null) => Handle
    ENTRY(imageRrcBoxes),     // (height: number, width: number, seed: number, count: number, params?: readonly number[] | null) => Float64Array
    ENTRY(tarScan),           // (path: string, options?: ImageLimits | null) => TarScan
};
// clang-format on

void initImageOps(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(kImageOps), std::end(kImageOps)); }

}  // namespace residual
