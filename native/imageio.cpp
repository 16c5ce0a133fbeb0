// Image decoding (libjpeg-turbo, libpng) and streaming datasets read and decoded on the loader's
// native threads: ImageNet-layout folders (one folder per class) and WebDataset tar shards (samples
// grouped by basename: 0001.jpg + 0001.cls). Memory stays bounded whatever the dataset size: a
// folder is a list of paths, shards are read member by member, the shuffle buffer holds at most a
// configured number of encoded samples and bytes, and at most `prefetch` batches wait per thread.
//
// Transforms follow torchvision: RandomResizedCrop (crop box sampled exactly as
// RandomResizedCrop.get_params: 10 tries with scale uniform and log-uniform ratio, then the
// centre-crop fallback) with antialiased bilinear resampling (the triangle filter widened by the
// downscale factor, as torch's _upsample_bilinear2d_aa and PIL), horizontal flip, normalisation;
// for evaluation Resize(shorter side) then CenterCrop. Only the crop region of a JPEG is decoded
// (jpeg_crop_scanline / jpeg_skip_scanlines): its pixels are the same as a full decode's.
//
// Worker threads never call into JS. An unreadable or corrupt file becomes an error naming its path:
// either the run stops with it (the next next() rejects), or the sample is skipped and counted
// (streamSkipped() drains the list). Every file is validated: bounded file size, bounded pixel count
// (checked from the header before any pixel is decoded), tar header checksums and sizes.
#include "residual.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>

extern "C" {
#include <jpeglib.h>
#include <jerror.h>
}
#include <png.h>

#if !defined(LIBJPEG_TURBO_VERSION_NUMBER) && !defined(LIBJPEG_TURBO_VERSION)
#error "residual needs libjpeg-turbo (jpeg_crop_scanline, jpeg_skip_scanlines), not another libjpeg"
#endif

namespace residual {

namespace {

struct ImageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Limits {
  int64_t maxPixels = int64_t(1) << 26;     // 67 M pixels (8192 x 8192)
  int64_t maxFileBytes = int64_t(1) << 28;  // 256 MiB per file or tar member
};

// A decoded region of an image: rows [y0, y0 + h) and columns [x0, x0 + w) of a fullH x fullW
// image, c channels interleaved (HWC), `stride` bytes per row.
struct Image {
  int64_t fullH = 0, fullW = 0;
  int64_t y0 = 0, x0 = 0, h = 0, w = 0, c = 0, stride = 0;
  std::vector<uint8_t> px;
  const uint8_t* at(int64_t y, int64_t x) const { return px.data() + (y - y0) * stride + (x - x0) * c; }
};

struct Box {
  int64_t i = 0, j = 0, h = 0, w = 0;  // top, left, height, width (torchvision's order)
};

// Given the full image size (height, width), the region that will be read.
using RoiFn = std::function<Box(int64_t, int64_t)>;

static bool isPng(const uint8_t* d, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  return n >= 8 && std::memcmp(d, sig, 8) == 0;
}
static bool isJpeg(const uint8_t* d, size_t n) { return n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff; }

// Longest side of an image we decode (JPEG's own limit; PNG held to it too): with the pixel cap,
// this bounds how thin an image can be, hence the resampler's intermediate buffers.
static constexpr int64_t kMaxSide = 65535;
// Most bytes the resampler's intermediate (one pass's output) may take.
static constexpr int64_t kMaxResampleBytes = int64_t(512) << 20;
// Largest class index (as lib/data/idx.ts's MAX_IDX_CLASSES - 1).
static constexpr int64_t kMaxLabel = 65535;

static void checkSize(int64_t h, int64_t w, const Limits& lim) {
  if (h <= 0 || w <= 0) throw ImageError("image has no pixels (" + std::to_string(w) + "x" + std::to_string(h) + ")");
  if (h > kMaxSide || w > kMaxSide)
    throw ImageError("image is " + std::to_string(w) + "x" + std::to_string(h) + ", over the limit of " + std::to_string(kMaxSide) + " pixels per side");
  if (h * w > lim.maxPixels)
    throw ImageError("image is " + std::to_string(w) + "x" + std::to_string(h) + " = " + std::to_string(h * w) +
                     " pixels, over the limit of " + std::to_string(lim.maxPixels) + " (maxPixels)");
}

// ---- JPEG (libjpeg-turbo) ----------------------------------------------------------------------

struct JpegErr {
  jpeg_error_mgr pub;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
};

static void jpegErrorExit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->msg);
  longjmp(e->jb, 1);
}

// Warnings: data that ends early (truncated files, corrupt entropy data) is an error; other warnings
// (e.g. extraneous bytes before a marker, common in real photo collections) are tolerated as PIL does.
static void jpegEmit(j_common_ptr c, int level) {
  if (level >= 0) return;
  int code = c->err->msg_code;
  if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_NOT_SEQUENTIAL || code == JWRN_HUFF_BAD_CODE) {
    auto* e = reinterpret_cast<JpegErr*>(c->err);
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
  }
  c->err->num_warnings++;
}

// Decodes (the region roi() chooses of) a JPEG to RGB or grayscale. No C++ object with a destructor
// is created between setjmp and a possible longjmp.
static void decodeJpeg(const uint8_t* data, size_t n, int channels, const Limits& lim, const RoiFn* roi, Image& out) {
  jpeg_decompress_struct cinfo;
  JpegErr jerr;
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = jpegErrorExit;
  jerr.pub.emit_message = jpegEmit;
  jerr.msg[0] = 0;
  std::vector<JSAMPROW> rows;
  Box box;
  const char* fail = nullptr;  // a problem found by our own checks
  std::string failMsg;
  if (setjmp(jerr.jb)) {
    jpeg_destroy_decompress(&cinfo);
    throw ImageError(std::string("cannot decode JPEG image: ") + jerr.msg);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(n));
  jpeg_read_header(&cinfo, TRUE);
  {
    int64_t H = cinfo.image_height, W = cinfo.image_width;
    if (H <= 0 || W <= 0 || H > kMaxSide || W > kMaxSide || H * W > lim.maxPixels) {
      fail = "size";
    } else {
      out.fullH = H;
      out.fullW = W;
      try {
        box = roi ? (*roi)(H, W) : Box{0, 0, H, W};
      } catch (const std::exception& e) {
        fail = "roi";
        failMsg = e.what();
      }
    }
  }
  if (fail) {
    int64_t H = cinfo.image_height, W = cinfo.image_width;
    jpeg_destroy_decompress(&cinfo);
    if (failMsg.empty()) checkSize(H, W, lim);  // throws
    throw ImageError(failMsg);
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  const int comps = cmyk ? 4 : (channels == 1 && cinfo.jpeg_color_space == JCS_GRAYSCALE) ? 1 : 3;
  cinfo.out_color_space = cmyk ? JCS_CMYK : comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;  // the accurate IDCT, as PIL and torchvision use
  jpeg_start_decompress(&cinfo);
  JDIMENSION xoff = JDIMENSION(box.j), cw = JDIMENSION(box.w);
  if (cw < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoff, &cw);  // widens to iMCU boundaries
  else {
    xoff = 0;
    cw = cinfo.output_width;
  }
  if (box.i > 0) jpeg_skip_scanlines(&cinfo, JDIMENSION(box.i));
  out.y0 = box.i;
  out.x0 = xoff;
  out.h = box.h;
  out.w = cw;
  out.c = comps;
  out.stride = int64_t(cw) * comps;
  out.px.resize(size_t(out.stride * out.h));
  rows.resize(size_t(out.h));
  for (int64_t r = 0; r < out.h; r++) rows[size_t(r)] = out.px.data() + r * out.stride;
  JDIMENSION got = 0;
  while (got < JDIMENSION(out.h)) {
    JDIMENSION k = jpeg_read_scanlines(&cinfo, rows.data() + got, JDIMENSION(out.h) - got);
    if (k == 0) break;
    got += k;
  }
  if (got < JDIMENSION(out.h)) {
    fail = "short";
    failMsg = "cannot decode JPEG image: the data ends early";
  }
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (fail) throw ImageError(failMsg);
  if (cmyk) {  // Adobe (inverted) CMYK, the usual kind: R = C * K / 255
    std::vector<uint8_t> rgb(size_t(out.h * out.w * 3));
    for (int64_t p = 0; p < out.h * out.w; p++) {
      const uint8_t* s = out.px.data() + 4 * p;
      for (int k = 0; k < 3; k++) rgb[size_t(3 * p + k)] = uint8_t((int(s[k]) * int(s[3]) + 127) / 255);
    }
    out.px.swap(rgb);
    out.c = 3;
    out.stride = out.w * 3;
  }
}

// ---- PNG (libpng) ------------------------------------------------------------------------------

struct PngRead {
  const uint8_t* data;
  size_t n, pos;
};

static void pngReadFn(png_structp p, png_bytep dst, png_size_t len) {
  auto* r = static_cast<PngRead*>(png_get_io_ptr(p));
  if (len > r->n - r->pos) png_error(p, "the data ends early (truncated file)");
  std::memcpy(dst, r->data + r->pos, len);
  r->pos += len;
}

struct PngErrState {
  char msg[256];
};

static void pngErrorFn(png_structp p, png_const_charp m) {
  auto* s = static_cast<PngErrState*>(png_get_error_ptr(p));
  std::snprintf(s->msg, sizeof(s->msg), "%s", m ? m : "error");
  png_longjmp(p, 1);
}
static void pngWarnFn(png_structp, png_const_charp) {}

// Decodes a PNG to 8-bit RGB (channels 1 or 3: alpha dropped, not composited, as PIL's convert does)
// or RGBA (channels 4). 16-bit samples are scaled to 8 bits with rounding; palettes and low bit
// depths are expanded; interlaced images are handled.
static void decodePng(const uint8_t* data, size_t n, int channels, const Limits& lim, Image& out) {
  PngErrState es;
  es.msg[0] = 0;
  PngRead rd{data, n, 0};
  png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &es, pngErrorFn, pngWarnFn);
  if (!p) throw std::bad_alloc();
  png_infop info = png_create_info_struct(p);
  if (!info) {
    png_destroy_read_struct(&p, nullptr, nullptr);
    throw std::bad_alloc();
  }
  std::vector<png_bytep> rows;
  bool tooBig = false;
  png_uint_32 W = 0, H = 0;
  if (setjmp(png_jmpbuf(p))) {
    png_destroy_read_struct(&p, &info, nullptr);
    throw ImageError(std::string("cannot decode PNG image: ") + es.msg);
  }
  png_set_read_fn(p, &rd, pngReadFn);
  png_set_user_limits(p, 0x7fffffff, 0x7fffffff);
  png_set_chunk_malloc_max(p, 8u << 20);  // libpng's default
  png_set_chunk_cache_max(p, 32);
#ifdef PNG_HANDLE_AS_UNKNOWN_SUPPORTED
  {
    // text chunks carry nothing we use: drop them unread into memory
    static const png_byte kText[] = {'t', 'E', 'X', 't', 0, 'z', 'T', 'X', 't', 0, 'i', 'T', 'X', 't', 0};
    png_set_keep_unknown_chunks(p, PNG_HANDLE_CHUNK_NEVER, kText, 3);
  }
#endif
  png_read_info(p, info);
  W = png_get_image_width(p, info);
  H = png_get_image_height(p, info);
  if (int64_t(W) * int64_t(H) > lim.maxPixels || W == 0 || H == 0 || int64_t(W) > kMaxSide || int64_t(H) > kMaxSide) tooBig = true;
  if (!tooBig) {
    int colorType = png_get_color_type(p, info);
    int depth = png_get_bit_depth(p, info);
    if (depth == 16) png_set_scale_16(p);
    if (colorType == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if (colorType == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(p);
    if (colorType == PNG_COLOR_TYPE_GRAY || colorType == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(p);
    if (channels == 4) {
      if (png_get_valid(p, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(p);
      png_set_filler(p, 0xff, PNG_FILLER_AFTER);
    } else {
      png_set_strip_alpha(p);
    }
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    const int comps = channels == 4 ? 4 : 3;
    if (png_get_rowbytes(p, info) != size_t(W) * comps) png_error(p, "unexpected row size after conversion");
    out.fullH = out.h = H;
    out.fullW = out.w = W;
    out.y0 = out.x0 = 0;
    out.c = comps;
    out.stride = int64_t(W) * comps;
    out.px.resize(size_t(out.stride) * H);
    rows.resize(H);
    for (png_uint_32 r = 0; r < H; r++) rows[r] = out.px.data() + size_t(r) * size_t(out.stride);
    png_read_image(p, rows.data());
  }
  png_destroy_read_struct(&p, &info, nullptr);
  if (tooBig) checkSize(H, W, lim);
}

// Luma with the ITU-R 601-2 weights (as PIL's "L" conversion), rounded.
static void toGray(Image& im) {
  if (im.c == 1) return;
  std::vector<uint8_t> g(size_t(im.h * im.w));
  for (int64_t y = 0; y < im.h; y++) {
    const uint8_t* s = im.px.data() + y * im.stride;
    for (int64_t x = 0; x < im.w; x++, s += im.c) g[size_t(y * im.w + x)] = uint8_t((299 * s[0] + 587 * s[1] + 114 * s[2] + 500) / 1000);
  }
  im.px.swap(g);
  im.c = 1;
  im.stride = im.w;
}

// Decodes PNG or JPEG (by signature) to `channels` (1, 3, or 4 = RGBA) channels.
static void decodeImage(const uint8_t* data, size_t n, int channels, const Limits& lim, const RoiFn* roi, Image& out) {
  if (isJpeg(data, n)) {
    decodeJpeg(data, n, channels, lim, roi, out);
    if (channels == 4) {
      std::vector<uint8_t> rgba(size_t(out.h * out.w * 4));
      for (int64_t y = 0; y < out.h; y++)
        for (int64_t x = 0; x < out.w; x++) {
          const uint8_t* s = out.px.data() + y * out.stride + x * out.c;
          uint8_t* d = rgba.data() + 4 * (y * out.w + x);
          d[0] = s[0];
          d[1] = out.c == 1 ? s[0] : s[1];
          d[2] = out.c == 1 ? s[0] : s[2];
          d[3] = 255;
        }
      out.px.swap(rgba);
      out.c = 4;
      out.stride = out.w * 4;
    } else if (channels == 3 && out.c == 1) {
      std::vector<uint8_t> rgb(size_t(out.h * out.w * 3));
      for (int64_t y = 0; y < out.h; y++)
        for (int64_t x = 0; x < out.w; x++) std::fill_n(rgb.data() + 3 * (y * out.w + x), 3, out.px[size_t(y * out.stride + x)]);
      out.px.swap(rgb);
      out.c = 3;
      out.stride = out.w * 3;
    }
  } else if (isPng(data, n)) {
    decodePng(data, n, channels, lim, out);
    if (roi) (*roi)(out.fullH, out.fullW);  // the whole image is decoded; the region is read from it
  } else {
    throw ImageError("not a PNG or JPEG image (unrecognised file signature)");
  }
  if (channels == 1) toGray(out);
}

// ---- antialiased bilinear resampling -----------------------------------------------------------

// Weights of the outputs [begin, begin + count) of a resize of inSize samples to outSize: the
// triangle filter, widened by the scale when downsampling, normalised per output (torch's
// _upsample_bilinear2d_aa with align_corners=False, and PIL's BILINEAR).
struct Taps {
  int64_t maxTaps = 0;
  std::vector<int64_t> start, size;
  std::vector<float> w;  // count * maxTaps
};

static Taps aaTaps(int64_t inSize, int64_t outSize, int64_t begin, int64_t count) {
  Taps t;
  const double scale = double(inSize) / double(outSize);
  const double support = scale >= 1.0 ? scale : 1.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  t.maxTaps = int64_t(std::ceil(support)) * 2 + 1;
  t.start.resize(size_t(count));
  t.size.resize(size_t(count));
  t.w.assign(size_t(count * t.maxTaps), 0.f);
  std::vector<double> tmp(size_t(t.maxTaps));
  for (int64_t k = 0; k < count; k++) {
    const int64_t i = begin + k;
    const double center = scale * (double(i) + 0.5);
    int64_t xmin = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    int64_t xsize = std::min<int64_t>(int64_t(center + support + 0.5), inSize) - xmin;
    xsize = std::max<int64_t>(0, std::min(xsize, t.maxTaps));
    double total = 0;
    for (int64_t j = 0; j < xsize; j++) {
      double x = std::abs((double(j + xmin) - center + 0.5) * invscale);
      double v = x < 1.0 ? 1.0 - x : 0.0;
      tmp[size_t(j)] = v;
      total += v;
    }
    for (int64_t j = 0; j < xsize; j++) t.w[size_t(k * t.maxTaps + j)] = float(total != 0 ? tmp[size_t(j)] / total : 0.0);
    t.start[size_t(k)] = xmin;
    t.size[size_t(k)] = xsize;
  }
  return t;
}

// The crop `box` of `im` resized to [RH, RW]; of that, the window of OH x OW outputs at (oy, ox) is
// written to dst (planar [C, OH, OW], float), horizontally flipped if `flip`, as v * scale[c] + shift[c]
// (v in 0..255). dst planes are `planeStride` floats apart.
static void resizedCrop(const Image& im, const Box& box, int64_t RH, int64_t RW, int64_t oy, int64_t ox, int64_t OH, int64_t OW,
                        bool flip, const float* scale, const float* shift, float* dst) {
  const int64_t C = im.c;
  Taps tx = aaTaps(box.w, RW, ox, OW);
  Taps ty = aaTaps(box.h, RH, oy, OH);
  // rows of the crop the vertical pass needs
  int64_t r0 = ty.start[0], r1 = 0;
  for (int64_t k = 0; k < OH; k++) {
    r0 = std::min(r0, ty.start[size_t(k)]);
    r1 = std::max(r1, ty.start[size_t(k)] + ty.size[size_t(k)]);
  }
  const int64_t nr = std::max<int64_t>(0, r1 - r0);
  if (nr * OW * C * int64_t(sizeof(float)) > kMaxResampleBytes)
    throw ImageError("resizing a " + std::to_string(box.w) + "x" + std::to_string(box.h) + " region to " + std::to_string(OW) + "x" +
                     std::to_string(OH) + " needs " + std::to_string(nr * OW * C * int64_t(sizeof(float)) >> 20) +
                     " MiB of intermediate buffer, over the limit of " + std::to_string(kMaxResampleBytes >> 20) + " MiB");
  std::vector<float> tmp(size_t(nr * OW * C));
  for (int64_t r = 0; r < nr; r++) {
    const int64_t y = box.i + r0 + r;
    float* o = tmp.data() + r * OW * C;
    for (int64_t x = 0; x < OW; x++) {
      const uint8_t* s = im.at(y, box.j + tx.start[size_t(x)]);
      const float* w = tx.w.data() + x * tx.maxTaps;
      const int64_t n = tx.size[size_t(x)];
      if (C == 3) {
        float a = 0, b = 0, c = 0;
        for (int64_t t = 0; t < n; t++, s += 3) {
          a += w[t] * s[0];
          b += w[t] * s[1];
          c += w[t] * s[2];
        }
        o[3 * x] = a;
        o[3 * x + 1] = b;
        o[3 * x + 2] = c;
      } else {
        for (int64_t ch = 0; ch < C; ch++) {
          float a = 0;
          for (int64_t t = 0; t < n; t++) a += w[t] * s[t * C + ch];
          o[C * x + ch] = a;
        }
      }
    }
  }
  const int64_t plane = OH * OW;
  std::vector<float> acc(size_t(OW * C));
  for (int64_t y = 0; y < OH; y++) {
    std::fill(acc.begin(), acc.end(), 0.f);
    const float* w = ty.w.data() + y * ty.maxTaps;
    const int64_t n = ty.size[size_t(y)];
    const float* base = tmp.data() + (ty.start[size_t(y)] - r0) * OW * C;
    for (int64_t t = 0; t < n; t++) {
      const float* row = base + t * OW * C;
      const float wt = w[t];
      for (int64_t q = 0; q < OW * C; q++) acc[size_t(q)] += wt * row[q];
    }
    for (int64_t ch = 0; ch < C; ch++) {
      float* d = dst + ch * plane + y * OW;
      const float sc = scale[ch], sh = shift[ch];
      for (int64_t x = 0; x < OW; x++) {
        int64_t xo = flip ? OW - 1 - x : x;
        d[xo] = acc[size_t(x * C + ch)] * sc + sh;
      }
    }
  }
}

// ---- random parameters -------------------------------------------------------------------------

static inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static inline double unit(uint64_t& r) {
  r = mix(r);
  return double(r >> 11) * (1.0 / 9007199254740992.0);
}
// Python's round(): half to even (the default floating-point rounding mode).
static inline int64_t pyRound(double v) { return int64_t(std::nearbyint(v)); }

struct RrcParams {
  double scaleLo = 0.08, scaleHi = 1.0, ratioLo = 3.0 / 4.0, ratioHi = 4.0 / 3.0;
};

// torchvision.transforms.RandomResizedCrop.get_params, with our RNG in place of torch's.
static Box rrcBox(int64_t H, int64_t W, const RrcParams& p, uint64_t& r) {
  const double area = double(H) * double(W);
  const double lr0 = std::log(p.ratioLo), lr1 = std::log(p.ratioHi);
  for (int attempt = 0; attempt < 10; attempt++) {
    double target = area * (p.scaleLo + unit(r) * (p.scaleHi - p.scaleLo));
    double ar = std::exp(lr0 + unit(r) * (lr1 - lr0));
    int64_t w = pyRound(std::sqrt(target * ar));
    int64_t h = pyRound(std::sqrt(target / ar));
    if (0 < w && w <= W && 0 < h && h <= H) {
      int64_t i = std::min<int64_t>(H - h, int64_t(unit(r) * double(H - h + 1)));
      int64_t j = std::min<int64_t>(W - w, int64_t(unit(r) * double(W - w + 1)));
      return {i, j, h, w};
    }
  }
  const double inRatio = double(W) / double(H);
  int64_t w, h;
  if (inRatio < std::min(p.ratioLo, p.ratioHi)) {
    w = W;
    h = pyRound(double(w) / std::min(p.ratioLo, p.ratioHi));
  } else if (inRatio > std::max(p.ratioLo, p.ratioHi)) {
    h = H;
    w = pyRound(double(h) * std::max(p.ratioLo, p.ratioHi));
  } else {
    w = W;
    h = H;
  }
  return {(H - h) / 2, (W - w) / 2, h, w};
}

// torchvision Resize(size) with one int: the shorter side becomes `size`, the longer int(size * long / short).
static void resizeShorter(int64_t H, int64_t W, int64_t size, int64_t& RH, int64_t& RW) {
  if (H <= W) {
    RH = size;
    RW = int64_t(double(size) * double(W) / double(H));
  } else {
    RW = size;
    RH = int64_t(double(size) * double(H) / double(W));
  }
}

// ---- tar (ustar / GNU / pax) -------------------------------------------------------------------

static bool allZero(const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (b[i]) return false;
  return true;
}

static int64_t tarNumber(const uint8_t* f, size_t n, bool& ok) {
  ok = true;
  if (f[0] & 0x80) {  // base-256 (GNU), for sizes of 8 GiB and more
    if (f[0] != 0x80) {
      ok = false;
      return 0;
    }
    int64_t v = 0;
    for (size_t i = 1; i < n; i++) {
      if (v > (int64_t(1) << 52)) {
        ok = false;
        return 0;
      }
      v = (v << 8) | f[i];
    }
    return v;
  }
  int64_t v = 0;
  size_t i = 0;
  while (i < n && f[i] == ' ') i++;
  bool any = false;
  for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
    v = v * 8 + (f[i] - '0');
    any = true;
    if (v > (int64_t(1) << 52)) {
      ok = false;
      return 0;
    }
  }
  for (; i < n; i++)
    if (f[i] != 0 && f[i] != ' ') ok = false;
  if (!any) v = 0;
  return v;
}

struct TarMember {
  std::string name;
  int64_t size = 0;
  int64_t offset = 0;  // of the header
};

// Sequential reader of a tar file. next() returns the next regular file (pax and GNU long names
// applied; directories and other entries skipped); data() reads its bytes, or skip() passes them.
// Opens a regular file for reading (a FIFO or device would block a loader thread, or never end):
// O_NONBLOCK so opening a FIFO does not wait for a writer. `size` gets the file's size.
static std::FILE* openRegular(const std::string& path, int64_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ImageError(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ImageError("cannot open: not a regular file");
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl != -1) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  std::FILE* f = fdopen(fd, "rb");
  if (!f) {
    int e = errno;
    ::close(fd);
    throw ImageError(std::string("cannot open: ") + std::strerror(e));
  }
  size = int64_t(st.st_size);
  return f;
}

class TarReader {
 public:
  TarReader(const std::string& path, const Limits& lim) : path_(path), lim_(lim) {
    f_ = openRegular(path, size_);
    std::setvbuf(f_, nullptr, _IOFBF, 1 << 16);
  }
  ~TarReader() {
    if (f_) std::fclose(f_);
  }
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  bool next(TarMember& m) {
    if (pending_ > 0) skip();
    std::string longName;
    for (;;) {
      uint8_t h[512];
      int64_t at = pos_;
      size_t got = std::fread(h, 1, 512, f_);
      if (got == 0 && std::feof(f_)) return false;  // no end-of-archive blocks: tolerated
      if (got != 512) throw ImageError(where(at) + "truncated tar header");
      pos_ += 512;
      if (allZero(h, 512)) return false;  // end of archive
      unsigned sum = 0;
      for (int i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : h[i];
      bool ok;
      int64_t want = tarNumber(h + 148, 8, ok);
      if (!ok || int64_t(sum) != want) throw ImageError(where(at) + "bad tar header checksum (not a tar file, or corrupt)");
      int64_t size = tarNumber(h + 124, 12, ok);
      if (!ok || size < 0) throw ImageError(where(at) + "bad size field in tar header");
      char type = char(h[156]);
      std::string name(reinterpret_cast<char*>(h), strnlen(reinterpret_cast<char*>(h), 100));
      if (std::memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
        std::string prefix(reinterpret_cast<char*>(h + 345), strnlen(reinterpret_cast<char*>(h + 345), 155));
        name = prefix + "/" + name;
      }
      if (type == 'L' || type == 'x') {  // GNU long name; pax extended header (we read only path=)
        if (size > (1 << 20)) throw ImageError(where(at) + "oversized extended header");
        std::string body(size_t(size), '\0');
        if (size && std::fread(&body[0], 1, size_t(size), f_) != size_t(size)) throw ImageError(where(at) + "truncated tar member");
        pos_ += size;
        padTo512(size);
        if (type == 'L') {
          longName = std::string(body.c_str());
        } else {
          // records "<len> <key>=<value>\n", len counting the whole record
          size_t p = 0;
          while (p < body.size()) {
            if (body[p] == '\0') break;  // NUL padding after the records
            size_t q = p, len = 0;
            while (q < body.size() && body[q] >= '0' && body[q] <= '9' && q - p < 8) len = len * 10 + size_t(body[q++] - '0');
            if (q == p || q >= body.size() || body[q] != ' ' || len < q - p + 2 || len > body.size() - p || body[p + len - 1] != '\n')
              throw ImageError(where(at) + "malformed pax extended header record");
            const size_t sp = q;
            std::string rec = body.substr(sp + 1, p + len - sp - 2);
            if (rec.compare(0, 5, "path=") == 0) longName = rec.substr(5);
            p += len;
          }
        }
        continue;
      }
      if (!longName.empty()) name = longName;
      if (type == '0' || type == '\0' || type == '7') {
        m.name = name;
        m.size = size;
        m.offset = at;
        pending_ = size;
        return true;
      }
      // directories, links, global pax headers...: skip their data
      pending_ = size;
      skip();
      longName.clear();
    }
  }

  void data(std::vector<uint8_t>& out, const std::string& member) {
    if (pending_ > lim_.maxFileBytes)
      throw ImageError(path_ + ": member " + member + " is " + std::to_string(pending_) + " bytes, over the limit of " + std::to_string(lim_.maxFileBytes) + " (maxFileBytes)");
    out.resize(size_t(pending_));
    if (pending_ && std::fread(out.data(), 1, size_t(pending_), f_) != size_t(pending_)) throw ImageError(path_ + ": member " + member + " is truncated");
    pos_ += pending_;
    padTo512(pending_);
    pending_ = 0;
  }

  void skip() {
    int64_t n = (pending_ + 511) / 512 * 512;
    if (n && fseeko(f_, off_t(n), SEEK_CUR) != 0) throw ImageError(where(pos_) + "cannot seek");
    pos_ += n;
    pending_ = 0;
    checkPos();
  }

 private:
  std::string where(int64_t at) const { return path_ + " at byte " + std::to_string(at) + ": "; }
  void padTo512(int64_t size) {
    int64_t pad = (512 - size % 512) % 512;
    if (pad) {
      if (fseeko(f_, off_t(pad), SEEK_CUR) != 0) throw ImageError(where(pos_) + "cannot seek");
      pos_ += pad;
      checkPos();
    }
  }
  // fseeko past the end succeeds: a member cut short by truncation shows as a position beyond the file
  void checkPos() const {
    if (pos_ > size_) throw ImageError(where(pos_) + "truncated tar member (the file is " + std::to_string(size_) + " bytes)");
  }
  std::string path_;
  Limits lim_;
  std::FILE* f_ = nullptr;
  int64_t pos_ = 0;
  int64_t pending_ = 0;
  int64_t size_ = 0;
};

// WebDataset's key and extension: the member path split at the first '.' of its last component.
static void splitKey(const std::string& name, std::string& key, std::string& ext) {
  size_t slash = name.rfind('/');
  size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos) {
    key = name;
    ext.clear();
  } else {
    key = name.substr(0, dot);
    ext = name.substr(dot + 1);
  }
  for (auto& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
}

static bool isImageExt(const std::string& e) { return e == "jpg" || e == "jpeg" || e == "png"; }

static bool parseLabel(const std::vector<uint8_t>& b, int64_t& v) {  // false: not a label in 0..kMaxLabel
  std::string s(b.begin(), b.end());
  size_t a = s.find_first_not_of(" \t\r\n"), z = s.find_last_not_of(" \t\r\n");
  if (a == std::string::npos) return false;
  s = s.substr(a, z - a + 1);
  if (s.empty() || s.size() > 18) return false;
  v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  return v <= kMaxLabel;
}

static std::vector<uint8_t> readFile(const std::string& path, const Limits& lim) {
  int64_t fileSize = 0;
  std::FILE* f = openRegular(path, fileSize);
  std::vector<uint8_t> buf;
  if (fseeko(f, 0, SEEK_END) == 0) {
    off_t n = ftello(f);
    if (n > lim.maxFileBytes) {
      std::fclose(f);
      throw ImageError("file is " + std::to_string(int64_t(n)) + " bytes, over the limit of " + std::to_string(lim.maxFileBytes) + " (maxFileBytes)");
    }
    std::rewind(f);
    if (n > 0) buf.resize(size_t(n));
  }
  size_t got = buf.empty() ? 0 : std::fread(buf.data(), 1, buf.size(), f);
  bool bad = std::ferror(f);
  std::fclose(f);
  if (bad || got != buf.size()) throw ImageError("read error");
  return buf;
}

// ---- the streaming loader ----------------------------------------------------------------------

enum class Transform { Train, Eval, Resize };

struct StreamCfg {
  bool tar = false;
  std::vector<std::string> files;  // folder: image paths
  std::vector<int64_t> labels;     // folder: labels
  std::vector<std::string> shards;  // webdataset: tar paths
  std::vector<int64_t> shardCounts;  // samples per shard (for the length), or empty
  int64_t batch = 1, workers = 1, prefetch = 2;
  bool shuffle = false, dropLast = false;
  uint64_t seed = 0;
  int64_t rank = 0, world = 1;
  Transform transform = Transform::Train;
  int64_t outH = 224, outW = 224, resize = 256;
  RrcParams rrc;
  bool flip = true;
  int channels = 3;
  std::vector<float> mean, std;
  bool skipErrors = false;
  Limits lim;
  int64_t shuffleBuffer = 1000;           // samples held per worker for shuffling (webdataset)
  int64_t shuffleBufferBytes = 256 << 20;  // encoded bytes held in all shuffle buffers together
  at::Device device = at::Device(at::kCPU);
  bool pin = false, channelsLast = false;
};

struct StreamBatch {
  at::Tensor x, y;
};

struct Encoded {
  std::vector<uint8_t> bytes;
  std::string name;  // for errors: path, or shard:member
  int64_t label = 0;
};

struct StreamLoader {
  StreamCfg cfg;
  uint64_t epoch = 0;
  std::vector<int64_t> rankIndex;                 // folder: this rank's sample indices, in order
  std::vector<std::vector<std::string>> workerShards;  // webdataset: each worker's shards, in order
  int64_t numBatches = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::deque<StreamBatch>> queues;
  std::vector<char> done;
  int64_t cursor = 0, perWorkerPrefetch = 1;
  bool stop = false, running = false, closed = false;
  std::string error;
  std::vector<std::thread> threads;
  int64_t skippedCount = 0;
  std::vector<std::pair<std::string, std::string>> skipped;  // the most recent, at most 100
  napi_env env = nullptr;

  ~StreamLoader() { close(); }

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

  int64_t batchesOf(int64_t n) const { return cfg.dropLast ? n / cfg.batch : (n + cfg.batch - 1) / cfg.batch; }

  // The epoch's partition: a seeded permutation, then this rank's share; for shards, this rank's
  // shards then each worker's. Fills numBatches.
  void plan(uint64_t ep) {
    numBatches = 0;
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
      rankIndex.clear();
      for (int64_t k = 0; k < per; k++) rankIndex.push_back(order[size_t((cfg.rank + k * cfg.world) % n)]);
      int64_t nb = batchesOf(int64_t(rankIndex.size()));
      numBatches = nb;
    } else {
      std::vector<int64_t> order(cfg.shards.size());
      for (size_t i = 0; i < order.size(); i++) order[i] = int64_t(i);
      if (cfg.shuffle) {
        std::mt19937_64 rng(mix(cfg.seed ^ 0x7f4a7c15ULL) ^ mix(ep + 0x5851f42d4c957f2dULL));
        for (int64_t i = int64_t(order.size()) - 1; i > 0; i--) std::swap(order[size_t(i)], order[size_t(rng() % uint64_t(i + 1))]);
      }
      workerShards.assign(size_t(W), {});
      std::vector<int64_t> counts(size_t(W), 0);
      int64_t k = 0;
      for (size_t p = size_t(cfg.rank); p < order.size(); p += size_t(cfg.world), k++) {
        workerShards[size_t(k % W)].push_back(cfg.shards[size_t(order[p])]);
        if (!cfg.shardCounts.empty()) counts[size_t(k % W)] += cfg.shardCounts[size_t(order[p])];
      }
      for (int64_t w = 0; w < W; w++) numBatches += batchesOf(counts[size_t(w)]);
    }
  }

  void start(uint64_t ep) {
    halt();
    std::lock_guard<std::mutex> lk(mu);
    if (closed) throw std::runtime_error("the data loader was closed");
    epoch = ep;
    plan(ep);
    const int64_t W = cfg.workers;
    queues.assign(size_t(W), {});
    done.assign(size_t(W), 0);
    cursor = 0;
    perWorkerPrefetch = std::max<int64_t>(1, (cfg.prefetch + W - 1) / W);
    stop = false;
    running = true;
    error.clear();
    for (int64_t w = 0; w < W; w++) threads.emplace_back([this, w] { work(w); });
  }

  void normalisers(std::vector<float>& scale, std::vector<float>& shift) const {
    const int C = cfg.channels;
    scale.resize(size_t(C));
    shift.resize(size_t(C));
    for (int c = 0; c < C; c++) {
      float m = cfg.mean.empty() ? 0.f : cfg.mean[cfg.mean.size() == 1 ? 0 : size_t(c)];
      float s = cfg.std.empty() ? 1.f : cfg.std[cfg.std.size() == 1 ? 0 : size_t(c)];
      scale[size_t(c)] = 1.f / (255.f * s);
      shift[size_t(c)] = -m / s;
    }
  }

  // Decodes and transforms one encoded image into dst ([C, outH, outW], uint8: resampled in float,
  // then rounded, as PIL's resize and torchvision's on uint8 images); `r` is the sample's RNG.
  void transformInto(const uint8_t* data, size_t n, uint64_t r, uint8_t* dst, Image& im) const {
    Box box;
    int64_t RH = cfg.outH, RW = cfg.outW, oy = 0, ox = 0;
    bool flip = false;
    RoiFn roi = [&](int64_t H, int64_t W) -> Box {
      if (cfg.transform == Transform::Train) {
        box = rrcBox(H, W, cfg.rrc, r);
        return box;
      }
      box = {0, 0, H, W};
      if (cfg.transform == Transform::Eval) {
        resizeShorter(H, W, cfg.resize, RH, RW);
        // CenterCrop: top = int(round((RH - outH) / 2)), as torchvision (no padding: RH >= outH needed)
        oy = pyRound(double(RH - cfg.outH) / 2.0);
        ox = pyRound(double(RW - cfg.outW) / 2.0);
        if (oy < 0 || ox < 0) throw ImageError("resize " + std::to_string(cfg.resize) + " is smaller than the crop");
      }
      return box;
    };
    decodeImage(data, n, cfg.channels, cfg.lim, &roi, im);
    if (cfg.transform == Transform::Train && cfg.flip) flip = unit(r) < 0.5;
    thread_local std::vector<float> scratch, one;
    const int64_t count = int64_t(cfg.channels) * cfg.outH * cfg.outW;
    scratch.resize(size_t(count));
    one.assign(size_t(cfg.channels), 1.f);
    std::vector<float> zero(size_t(cfg.channels), 0.f);
    resizedCrop(im, box, RH, RW, oy, ox, cfg.outH, cfg.outW, flip, one.data(), zero.data(), scratch.data());
    for (int64_t k = 0; k < count; k++) {
      float v = scratch[size_t(k)];
      dst[k] = uint8_t(v <= 0.f ? 0 : v >= 255.f ? 255 : int(v + 0.5f));
    }
  }

  // uint8 batch -> float32, (x / 255 - mean) / std, on the consumer's side (on the device for CUDA):
  // the loader holds and copies 4x fewer bytes.
  void normalize(StreamBatch& b) const {
    at::NoGradGuard ng;
    std::vector<float> scale, shift;
    normalisers(scale, shift);
    auto opt = at::TensorOptions().dtype(at::kFloat);
    at::Tensor sc = at::from_blob(scale.data(), {1, int64_t(scale.size()), 1, 1}, opt).to(b.x.device());
    at::Tensor sh = at::from_blob(shift.data(), {1, int64_t(shift.size()), 1, 1}, opt).to(b.x.device());
    b.x = b.x.to(at::kFloat).mul_(sc).add_(sh);
  }

  uint64_t sampleSeed(uint64_t worker, uint64_t k) const {
    return mix(mix(cfg.seed ^ 0xa0761d6478bd642fULL) ^ mix(epoch * 0x9e3779b97f4a7c15ULL + uint64_t(cfg.rank) * 0x632be59bd9b4e019ULL) ^ mix(worker * 0x8cb92ba72f3d8dd7ULL + k));
  }

  void recordSkip(const std::string& name, const std::string& msg) {
    std::lock_guard<std::mutex> lk(mu);
    skippedCount++;
    skipped.emplace_back(name, msg);
    if (skipped.size() > 100) skipped.erase(skipped.begin());
  }

  // A failed sample: skipped and counted, or the run stops (returns false).
  bool failed(const std::string& name, const std::string& msg) {
    if (cfg.skipErrors) {
      recordSkip(name, msg);
      return true;
    }
    std::lock_guard<std::mutex> lk(mu);
    if (error.empty()) error = name + ": " + msg;
    cv.notify_all();
    return false;
  }

  bool shouldStop() {
    std::lock_guard<std::mutex> lk(mu);
    return stop;
  }

  // Waits until worker w may start a batch: the batches it holds (ready, plus the one it is about to
  // make) stay within its share of the prefetch, so the loader's memory is bounded by `prefetch`
  // batches whatever the dataset and timing. False if stopped.
  bool waitRoom(int64_t w) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return stop || int64_t(queues[size_t(w)].size()) < perWorkerPrefetch; });
    return !stop;
  }

  // Queues a finished batch (its room was reserved by waitRoom). False if stopped.
  bool push(int64_t w, StreamBatch&& b) {
    std::unique_lock<std::mutex> lk(mu);
    if (stop) return false;
    queues[size_t(w)].push_back(std::move(b));
    lk.unlock();
    cv.notify_all();
    return true;
  }

  // Abandons the current epoch: stops the workers and frees the batches made ahead.
  void abandon() {
    halt();
    std::lock_guard<std::mutex> lk(mu);
    for (auto& q : queues) q.clear();
  }

  void finish(int64_t w) {
    {
      std::lock_guard<std::mutex> lk(mu);
      done[size_t(w)] = 1;
    }
    cv.notify_all();
  }

  // Turns a filled batch buffer into the output (pinned, device copy).
  StreamBatch seal(at::Tensor x, at::Tensor y, int64_t filled, bool pinned) {
    if (filled < x.size(0)) {
      x = x.narrow(0, 0, filled).clone();
      y = y.narrow(0, 0, filled).clone();
      if (pinned) {
        x = x.pin_memory();
        y = y.pin_memory();
      }
    }
    if (cfg.channelsLast) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    if (!cfg.device.is_cpu()) {
      x = x.to(cfg.device, /*non_blocking=*/pinned);
      y = y.to(cfg.device, /*non_blocking=*/pinned);
    }
    return {x, y};
  }

  void work(int64_t w) {
    try {
      at::NoGradGuard ng;
      if (cfg.tar) workTar(w);
      else workFolder(w);
    } catch (const c10::Error& e) {
      std::lock_guard<std::mutex> lk(mu);
      if (error.empty()) error = e.what_without_backtrace();
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lk(mu);
      if (error.empty()) error = e.what();
    }
    finish(w);
  }

  std::pair<at::Tensor, at::Tensor> newBatch(int64_t B, bool pinned) const {
    auto fopt = at::TensorOptions().dtype(at::kByte).pinned_memory(pinned);
    return {at::empty({B, cfg.channels, cfg.outH, cfg.outW}, fopt), at::empty({B}, at::TensorOptions().dtype(at::kLong).pinned_memory(pinned))};
  }

  void workFolder(int64_t w) {
    const bool pinned = cfg.pin && cfg.device.is_cuda();
    const int64_t n = int64_t(rankIndex.size()), plane = cfg.channels * cfg.outH * cfg.outW;
    Image im;
    for (int64_t b = w; b < numBatches; b += cfg.workers) {
      const int64_t begin = b * cfg.batch, B = std::min(n, begin + cfg.batch) - begin;
      if (!waitRoom(w)) return;
      auto [x, y] = newBatch(B, pinned);
      uint8_t* xd = x.data_ptr<uint8_t>();
      int64_t* yd = y.data_ptr<int64_t>();
      int64_t filled = 0;
      for (int64_t k = 0; k < B; k++) {
        if (shouldStop()) return;
        const int64_t idx = rankIndex[size_t(begin + k)];
        const std::string& path = cfg.files[size_t(idx)];
        try {
          std::vector<uint8_t> bytes = readFile(path, cfg.lim);
          transformInto(bytes.data(), bytes.size(), sampleSeed(0, uint64_t(begin + k)), xd + filled * plane, im);
          yd[filled++] = cfg.labels[size_t(idx)];
        } catch (const ImageError& e) {
          if (!failed(path, e.what())) return;
        } catch (const std::bad_alloc&) {
          if (!failed(path, "out of memory")) return;
        }
      }
      if (filled == 0) continue;
      if (!push(w, seal(x, y, filled, pinned))) return;
    }
  }

  // Streams worker w's shards: samples (image + cls) -> shuffle buffer -> batches.
  void workTar(int64_t w) {
    const bool pinned = cfg.pin && cfg.device.is_cuda();
    const int64_t plane = cfg.channels * cfg.outH * cfg.outW;
    std::mt19937_64 rng(mix(cfg.seed ^ 0x3c6ef372fe94f82bULL) ^ mix(epoch * 0x9e3779b97f4a7c15ULL + uint64_t(cfg.rank)) ^ mix(uint64_t(w) + 77));
    const int64_t bufN = cfg.shuffle ? std::max<int64_t>(1, cfg.shuffleBuffer) : 0;
    const int64_t bufBytes = std::max<int64_t>(1, cfg.shuffleBufferBytes / cfg.workers);
    std::vector<Encoded> buf;
    int64_t held = 0;
    at::Tensor x, y;
    int64_t filled = 0;
    uint64_t ordinal = 0;
    Image im;
    bool ok = true;

    auto emit = [&](Encoded& s) -> bool {
      if (!x.defined()) {
        if (!waitRoom(w)) return false;
        std::tie(x, y) = newBatch(cfg.batch, pinned);
      }
      try {
        transformInto(s.bytes.data(), s.bytes.size(), sampleSeed(uint64_t(w) + 1, ordinal++), x.data_ptr<uint8_t>() + filled * plane, im);
        y.data_ptr<int64_t>()[filled++] = s.label;
      } catch (const ImageError& e) {
        if (!failed(s.name, e.what())) return false;
      } catch (const std::bad_alloc&) {
        if (!failed(s.name, "out of memory")) return false;
      }
      if (filled == cfg.batch) {
        StreamBatch out = seal(x, y, filled, pinned);
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
      if (!ok || shouldStop()) return;
      try {
        TarReader tr(shard, cfg.lim);
        TarMember m;
        std::string curKey, key, ext;
        Encoded cur;
        bool hasImg = false, hasLabel = false, curBad = false;
        std::string curErr;
        auto flush = [&]() -> bool {
          if (curKey.empty()) return true;
          std::string name = shard + ":" + curKey;
          bool r = true;
          if (curBad) r = failed(name, curErr);
          else if (!hasImg) r = failed(name, "sample has no .jpg, .jpeg or .png member");
          else if (!hasLabel) r = failed(name, "sample has no .cls member (an integer class index)");
          else {
            cur.name = name + "." + (cur.bytes.size() >= 3 && isJpeg(cur.bytes.data(), cur.bytes.size()) ? "jpg" : "png");
            r = admit(std::move(cur));
          }
          cur = Encoded();
          hasImg = hasLabel = curBad = false;
          curErr.clear();
          return r;
        };
        while (tr.next(m)) {
          if (shouldStop()) return;
          splitKey(m.name, key, ext);
          if (key != curKey) {
            if (!flush()) return;
            curKey = key;
          }
          if (isImageExt(ext) && !hasImg) {
            try {
              tr.data(cur.bytes, m.name);
              hasImg = true;
            } catch (const ImageError& e) {
              if (std::string(e.what()).find("over the limit") == std::string::npos) throw;
              tr.skip();
              curBad = true;
              curErr = e.what();
            }
          } else if (ext == "cls" && !hasLabel) {
            std::vector<uint8_t> lb;
            if (m.size > 64) {
              tr.skip();
              curBad = true;
              curErr = "bad .cls member (more than 64 bytes)";
            } else {
              tr.data(lb, m.name);
              if (parseLabel(lb, cur.label)) hasLabel = true;
              else {
                curBad = true;
                curErr = "bad .cls member (not a class index in 0.." + std::to_string(kMaxLabel) + ")";
              }
            }
          } else {
            tr.skip();
          }
        }
        if (!flush()) return;
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
      if (shouldStop()) return;
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

  // Round-robin over the workers' queues (a finished worker is passed over): the batch order is a
  // function of the seed, epoch and worker count only.
  bool take(StreamBatch& out, std::string& err) {
    std::unique_lock<std::mutex> lk(mu);
    const int64_t W = cfg.workers;
    for (;;) {
      if (closed) {
        err = "the data loader was closed";
        return false;
      }
      if (!error.empty()) {
        err = error;
        return false;
      }
      if (queues.empty()) {
        err = "the data loader was not started";
        return false;
      }
      if (!running) {
        err = "the data loader was stopped (a new epoch was started)";
        return false;
      }
      bool allDone = true;
      for (int64_t k = 0; k < W; k++) {
        int64_t w = (cursor + k) % W;
        if (!queues[size_t(w)].empty() || !done[size_t(w)]) {
          allDone = false;
          break;
        }
      }
      if (allDone) return false;
      int64_t w = cursor % W;
      if (!queues[size_t(w)].empty()) {
        out = std::move(queues[size_t(w)].front());
        queues[size_t(w)].pop_front();
        cursor++;
        lk.unlock();
        cv.notify_all();
        normalize(out);
        return true;
      }
      if (done[size_t(w)]) {
        cursor++;
        continue;
      }
      cv.wait(lk);
    }
  }
};

static const napi_type_tag kStreamTag = {0x2b7e151628aed2a6ULL, 0xabf7158809cf4f3cULL};

static StreamLoader* getStream(Args& a, size_t i) {
  bool ok = false;
  if (i >= a.size() || !a.info[i].IsExternal() || napi_check_object_type_tag(a.env(), a.info[i], &kStreamTag, &ok) != napi_ok || !ok)
    a.fail(i, "loader", "a native streaming data loader");
  return a.info[i].As<Napi::External<StreamLoader>>().Data();
}

static Napi::Value optVal(const Napi::Object& o, const char* k) { return o.Get(k); }
static double num(const Napi::Object& o, const char* key, double d) {
  Napi::Value v = optVal(o, key);
  if (v.IsUndefined() || v.IsNull()) return d;
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
  if (!v.IsNumber()) throw ArgError(std::string("option '") + key + "' must be a number, got " + describe(v));
  double x = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x)) throw ArgError(std::string("option '") + key + "' must be finite");
  return x;
}
// An integer option in [lo, hi] (exactInt: RangeError/TypeError naming the option).
static int64_t intOpt(const Napi::Object& o, const char* key, int64_t d, int64_t lo, int64_t hi) {
  int64_t v = exactInt(num(o, key, double(d)), std::string("option '") + key + "'");
  if (v < lo || v > hi)
    throw RangeArgError(std::string("option '") + key + "' must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + std::to_string(v));
  return v;
}
static std::vector<std::string> strings(const Napi::Object& o, const char* key) {
  std::vector<std::string> out;
  Napi::Value v = optVal(o, key);
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) throw ArgError(std::string("option '") + key + "' must be an array of strings");
  auto arr = v.As<Napi::Array>();
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsString()) throw ArgError(std::string("option '") + key + "' must hold strings");
    out.push_back(e.As<Napi::String>().Utf8Value());
  }
  return out;
}
static std::vector<double> numbers(const Napi::Object& o, const char* key) {
  std::vector<double> out;
  Napi::Value v = optVal(o, key);
  if (v.IsUndefined() || v.IsNull()) return out;
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_int32_array) {
      auto a = v.As<Napi::Int32Array>();
      for (size_t i = 0; i < a.ElementLength(); i++) out.push_back(a[i]);
      return out;
    }
    if (ta.TypedArrayType() == napi_float64_array) {
      auto a = v.As<Napi::Float64Array>();
      for (size_t i = 0; i < a.ElementLength(); i++) {
        if (!std::isfinite(a[i])) throw RangeArgError(std::string("option '") + key + "' must hold finite numbers");
        out.push_back(a[i]);
      }
      return out;
    }
  }
  if (!v.IsArray()) throw ArgError(std::string("option '") + key + "' must be an array of numbers");
  auto arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsNumber()) throw ArgError(std::string("option '") + key + "' must hold numbers");
    double x = e.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(x)) throw RangeArgError(std::string("option '") + key + "' must hold finite numbers");
    out.push_back(x);
  }
  return out;
}
static Limits limitsOf(const Napi::Object& o) {
  Limits l;
  l.maxPixels = intOpt(o, "maxPixels", l.maxPixels, 1, int64_t(1) << 40);
  l.maxFileBytes = intOpt(o, "maxFileBytes", l.maxFileBytes, 1, int64_t(1) << 40);
  return l;
}

static void closeStreamHook(void* p) { static_cast<StreamLoader*>(p)->close(); }

}  // namespace

// streamCreate(options): { kind: 'folder' | 'webdataset', files, labels | shards, shardCounts, ... }
DEFN(streamCreate) {
  if (!a.has(0) || !a.info[0].IsObject()) a.fail(0, "options", "an object");
  auto o = a.info[0].As<Napi::Object>();
  auto L = std::make_unique<StreamLoader>();
  StreamCfg& c = L->cfg;
  Napi::Value kind = o.Get("kind");
  std::string k = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : "";
  if (k == "folder") {
    c.files = strings(o, "files");
    for (double v : numbers(o, "labels")) {
      int64_t lab = exactInt(v, "option 'labels' entry");
      if (lab < 0 || lab > kMaxLabel) throw RangeArgError("labels must be integers in 0.." + std::to_string(kMaxLabel) + ", got " + std::to_string(lab));
      c.labels.push_back(lab);
    }
    if (c.files.size() != c.labels.size()) throw ArgError("files and labels must have the same length");
    if (c.files.empty()) throw ArgError("no files");
  } else if (k == "webdataset") {
    c.tar = true;
    c.shards = strings(o, "shards");
    if (c.shards.empty()) throw ArgError("no shards");
    for (double v : numbers(o, "shardCounts")) {
      int64_t n = exactInt(v, "option 'shardCounts' entry");
      if (n < 0) throw RangeArgError("option 'shardCounts' entries must be non-negative, got " + std::to_string(n));
      c.shardCounts.push_back(n);
    }
    if (!c.shardCounts.empty() && c.shardCounts.size() != c.shards.size()) throw ArgError("shardCounts must have one entry per shard");
  } else {
    throw ArgError("option 'kind' must be 'folder' or 'webdataset'");
  }
  c.batch = intOpt(o, "batchSize", 1, 1, int64_t(1) << 24);
  c.workers = intOpt(o, "workers", 1, 1, 64);
  c.prefetch = intOpt(o, "prefetch", 2, 1, 1 << 16);
  c.shuffle = num(o, "shuffle", 0) != 0;
  c.dropLast = num(o, "dropLast", 0) != 0;
  c.seed = uint64_t(intOpt(o, "seed", 0, 0, int64_t(9007199254740991)));
  c.rank = intOpt(o, "rank", 0, 0, 1 << 20);
  c.world = intOpt(o, "worldSize", 1, 1, 1 << 20);
  if (c.world < 1 || c.rank < 0 || c.rank >= c.world) throw ArgError("need 0 <= rank < worldSize");
  if (c.tar && int64_t(c.shards.size()) < c.world) throw ArgError("fewer shards (" + std::to_string(c.shards.size()) + ") than ranks (" + std::to_string(c.world) + "): each rank reads whole shards");
  Napi::Value tv = o.Get("transform");
  std::string t = tv.IsString() ? tv.As<Napi::String>().Utf8Value() : "train";
  if (t == "train") c.transform = Transform::Train;
  else if (t == "eval") c.transform = Transform::Eval;
  else if (t == "resize") c.transform = Transform::Resize;
  else throw ArgError("option 'transform' must be 'train', 'eval' or 'resize'");
  auto size = numbers(o, "size");
  if (size.size() == 1) size.push_back(size[0]);
  if (size.size() == 2) {
    c.outH = exactInt(size[0], "option 'size'");
    c.outW = exactInt(size[1], "option 'size'");
  }
  if (c.outH < 1 || c.outW < 1 || c.outH > 8192 || c.outW > 8192) throw ArgError("size must be 1..8192");
  c.resize = intOpt(o, "resize", int64_t(double(std::max(c.outH, c.outW)) * 256.0 / 224.0), 1, kMaxSide);
  if (c.resize < std::max(c.outH, c.outW)) throw ArgError("resize must be at least the crop size");
  auto scale = numbers(o, "scale");
  if (scale.size() == 2) {
    c.rrc.scaleLo = scale[0];
    c.rrc.scaleHi = scale[1];
  }
  auto ratio = numbers(o, "ratio");
  if (ratio.size() == 2) {
    c.rrc.ratioLo = ratio[0];
    c.rrc.ratioHi = ratio[1];
  }
  if (!(c.rrc.scaleLo > 0 && c.rrc.scaleLo <= c.rrc.scaleHi && c.rrc.scaleHi <= 1 && c.rrc.ratioLo > 0 && c.rrc.ratioLo <= c.rrc.ratioHi))
    throw RangeArgError("scale must be 0 < lo <= hi <= 1 and ratio 0 < lo <= hi");
  c.flip = num(o, "hflip", 1) != 0;
  c.channels = int(intOpt(o, "channels", 3, 1, 4));
  if (c.channels != 1 && c.channels != 3) throw ArgError("channels must be 1 or 3");
  for (double v : numbers(o, "mean")) c.mean.push_back(float(v));
  for (double v : numbers(o, "std")) c.std.push_back(float(v));
  for (auto* v : {&c.mean, &c.std})
    if (!v->empty() && v->size() != 1 && int(v->size()) != c.channels) throw ArgError("mean/std must have 1 or `channels` entries");
  for (float s : c.std)
    if (!(s > 0)) throw ArgError("std entries must be positive");
  Napi::Value oe = o.Get("onError");
  std::string onError = oe.IsString() ? oe.As<Napi::String>().Utf8Value() : "stop";
  if (onError != "stop" && onError != "skip") throw ArgError("option 'onError' must be 'stop' or 'skip'");
  c.skipErrors = onError == "skip";
  c.lim = limitsOf(o);
  c.shuffleBuffer = intOpt(o, "shuffleBuffer", 1000, 0, int64_t(1) << 30);
  c.shuffleBufferBytes = intOpt(o, "shuffleBufferBytes", int64_t(256) << 20, 0, int64_t(1) << 40);
  Napi::Value dv = o.Get("device");
  if (dv.IsString()) c.device = parseDevice(dv.As<Napi::String>().Utf8Value());
  c.pin = num(o, "pinMemory", c.device.is_cuda() ? 1 : 0) != 0;
  c.channelsLast = num(o, "channelsLast", 0) != 0;
  StreamLoader* raw = L.release();
  raw->env = a.env();
  napi_add_env_cleanup_hook(a.env(), closeStreamHook, raw);
  auto ext = Napi::External<StreamLoader>::New(a.env(), raw, [](Napi::Env env, StreamLoader* p) {
    napi_remove_env_cleanup_hook(env, closeStreamHook, p);
    delete p;
  });
  napi_type_tag_object(a.env(), ext, &kStreamTag);
  return ext;
}

DEFN(streamStart) {
  StreamLoader* L = getStream(a, 0);
  L->start(uint64_t(a.I(1, "epoch")));
  return Napi::Number::New(a.env(), double(L->numBatches));
}

// Batches in an epoch (for shards: from shardCounts; skipped samples can make it fewer).
DEFN(streamLength) {
  StreamLoader* L = getStream(a, 0);
  std::lock_guard<std::mutex> lk(L->mu);
  if (L->running) return Napi::Number::New(a.env(), double(L->numBatches));
  uint64_t ep = a.has(1) ? uint64_t(a.I(1, "epoch")) : L->epoch;
  L->plan(ep);
  return Napi::Number::New(a.env(), double(L->numBatches));
}

DEFN(streamNextSync) { return takeBatchSync<StreamLoader, StreamBatch>(a.env(), getStream(a, 0)); }

DEFN(streamNext) {
  return NextBatchWorker<StreamLoader, StreamBatch, batchPair<StreamBatch>>::start(a.env(), getStream(a, 0), a.info[0]);
}

DEFN(streamStop) {
  getStream(a, 0)->abandon();
  return a.env().Undefined();
}

DEFN(streamClose) {
  getStream(a, 0)->close();
  return a.env().Undefined();
}

// { count, errors: [{ path, message }] }: samples skipped so far, and the recent ones not yet drained.
DEFN(streamSkipped) {
  StreamLoader* L = getStream(a, 0);
  std::vector<std::pair<std::string, std::string>> list;
  int64_t count;
  {
    std::lock_guard<std::mutex> lk(L->mu);
    list.swap(L->skipped);
    count = L->skippedCount;
  }
  Napi::Env env = a.env();
  auto o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, double(count)));
  auto arr = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); i++) {
    auto e = Napi::Object::New(env);
    e.Set("path", Napi::String::New(env, list[i].first));
    e.Set("message", Napi::String::New(env, list[i].second));
    arr.Set(uint32_t(i), e);
  }
  o.Set("errors", arr);
  return o;
}

// imageDecode(bytes: Uint8Array, channels 1|3|4, options?) -> uint8 [H, W, C]
DEFN(imageDecode) {
  if (!a.has(0) || !a.info[0].IsTypedArray()) a.fail(0, "bytes", "a Uint8Array");
  auto ta = a.info[0].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) a.fail(0, "bytes", "a Uint8Array");
  auto u8 = a.info[0].As<Napi::Uint8Array>();
  int channels = int(a.I(1, "channels"));
  if (channels != 1 && channels != 3 && channels != 4) throw ArgError("channels must be 1, 3 or 4");
  Limits lim;
  if (a.has(2) && a.info[2].IsObject()) lim = limitsOf(a.info[2].As<Napi::Object>());
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
  if (src.dim() != 3 || src.scalar_type() != at::kByte || src.device().is_cuda()) throw ArgError("image must be a CPU uint8 tensor [H, W, C]");
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
  if (b.i < 0 || b.j < 0 || b.h < 1 || b.w < 1 || b.i + b.h > im.h || b.j + b.w > im.w) throw ArgError("the box must lie inside the image");
  if (size[0] < 1 || size[1] < 1) throw ArgError("size must be positive");
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

// tarScan(path, options?) -> { samples, maxLabel, members }: counts samples (keys with an image) by
// reading the headers (and .cls members) only.
DEFN(tarScan) {
  std::string path = a.Str(0, "path");
  Limits lim;
  if (a.has(1) && a.info[1].IsObject()) lim = limitsOf(a.info[1].As<Napi::Object>());
  int64_t samples = 0, maxLabel = -1, members = 0;
  try {
    TarReader tr(path, lim);
    TarMember m;
    std::string curKey, key, ext;
    bool img = false;
    std::vector<uint8_t> lb;
    while (tr.next(m)) {
      members++;
      splitKey(m.name, key, ext);
      if (key != curKey) {
        if (img) samples++;
        img = false;
        curKey = key;
      }
      if (isImageExt(ext)) img = true;
      if (ext == "cls" && m.size <= 64) {
        tr.data(lb, m.name);
        int64_t v;
        if (parseLabel(lb, v)) maxLabel = std::max(maxLabel, v);
      }
    }
    if (img) samples++;
  } catch (const ImageError& e) {
    std::string msg = e.what();
    throw std::runtime_error(msg.compare(0, path.size(), path) == 0 ? msg : path + ": " + msg);
  }
  auto o = Napi::Object::New(a.env());
  o.Set("samples", Napi::Number::New(a.env(), double(samples)));
  o.Set("maxLabel", Napi::Number::New(a.env(), double(maxLabel)));
  o.Set("members", Napi::Number::New(a.env(), double(members)));
  return o;
}

static const FnEntry kImageIO[] = {
    ENTRY(streamCreate),      // (options: StreamCreateOptions) => NativeStream
    ENTRY(streamStart),       // (stream: NativeStream, epoch: number) => number
    ENTRY(streamLength),      // (stream: NativeStream, epoch?: number | null) => number
    ENTRY(streamNextSync),    // (stream: NativeStream) => NativeBatch | null
    ENTRY(streamNext),        // (stream: NativeStream) => Promise<NativeBatch | null>
    ENTRY(streamClose),       // (stream: NativeStream) => void
    ENTRY(streamStop),        // (stream: NativeStream) => void
    ENTRY(streamSkipped),     // (stream: NativeStream) => StreamSkipped
    ENTRY(imageDecode),       // (bytes: Uint8Array, channels: number, options?: ImageLimits | null) => Handle
    ENTRY(imageResizedCrop),  // (image: Handle, box: IntList, size: IntList, flip?: boolean | null) => Handle
    ENTRY(imageRrcBoxes),     // (height: number, width: number, seed: number, count: number, params?: readonly number[] | null) => Float64Array
    ENTRY(tarScan),           // (path: string, options?: ImageLimits | null) => TarScan
};

void initImageIO(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(kImageIO), std::end(kImageIO)); }

}  // namespace residual
