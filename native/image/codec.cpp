// JPEG (libjpeg-turbo) and PNG (libpng) decoding into an Image: see codec.h.
#include "image/codec.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

extern "C" {
#include <jpeglib.h>
#include <jerror.h>
}
#include <png.h>

#if !defined(LIBJPEG_TURBO_VERSION_NUMBER) && !defined(LIBJPEG_TURBO_VERSION)
#error "residual needs libjpeg-turbo (jpeg_crop_scanline, jpeg_skip_scanlines), not another libjpeg"
#endif

namespace residual::image {

bool isPng(const uint8_t* d, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  return n >= 8 && std::memcmp(d, sig, 8) == 0;
}
bool isJpeg(const uint8_t* d, size_t n) { return n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff; }

namespace {

void checkSize(int64_t h, int64_t w, const Limits& lim) {
  if (h <= 0 || w <= 0) throw ImageError("image has no pixels (" + std::to_string(w) + "x" + std::to_string(h) + ")");
  if (h > kMaxSide || w > kMaxSide)
    throw ImageError("image is " + std::to_string(w) + "x" + std::to_string(h) + ", over the limit of " + std::to_string(kMaxSide) +
                     " pixels per side");
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

void jpegErrorExit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->msg);
  longjmp(e->jb, 1);
}

// Warnings: data that ends early (truncated files, corrupt entropy data) is an error; other warnings
// (e.g. extraneous bytes before a marker, common in real photo collections) are tolerated as PIL does.
void jpegEmit(j_common_ptr c, int level) {
  if (level >= 0) return;
  int code = c->err->msg_code;
  if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_NOT_SEQUENTIAL || code == JWRN_HUFF_BAD_CODE) {
    auto* e = reinterpret_cast<JpegErr*>(c->err);
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
  }
  c->err->num_warnings++;
}

// Progressive JPEGs: every scan is a pass over all of the image's blocks, and a scan can be a few bytes
// (an end-of-band run), so a small file of many scans takes minutes to decode (10,000 scans of a
// 2048 x 2048 image: 188 KB, 9 s). Real encoders write about 10; libjpeg-turbo's own fuzzers stop at 500.
constexpr int kMaxScans = 500;

void jpegProgress(j_common_ptr c) {
  if (!c->is_decompressor || reinterpret_cast<j_decompress_ptr>(c)->input_scan_number <= kMaxScans) return;
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  std::snprintf(e->msg, sizeof(e->msg), "more than %d scans (a progressive JPEG has about 10)", kMaxScans);
  longjmp(e->jb, 1);
}

// Decodes (the region roi() chooses of) a JPEG to RGB or grayscale. No C++ object with a destructor
// is created between setjmp and a possible longjmp.
void decodeJpeg(const uint8_t* data, size_t n, int channels, const Limits& lim, const RoiFn* roi, Image& out) {
  jpeg_decompress_struct cinfo;
  JpegErr jerr;
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = jpegErrorExit;
  jerr.pub.emit_message = jpegEmit;
  jerr.msg[0] = 0;
  jpeg_progress_mgr progress;
  progress.progress_monitor = jpegProgress;
  std::vector<JSAMPROW> rows;
  Box box;
  const char* fail = nullptr;  // a problem found by our own checks
  std::string failMsg;
  if (setjmp(jerr.jb)) {
    jpeg_destroy_decompress(&cinfo);
    throw ImageError(std::string("cannot decode JPEG image: ") + jerr.msg);
  }
  jpeg_create_decompress(&cinfo);
  cinfo.progress = &progress;
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
  if (cw < cinfo.output_width)
    jpeg_crop_scanline(&cinfo, &xoff, &cw);  // widens to iMCU boundaries
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

void pngReadFn(png_structp p, png_bytep dst, png_size_t len) {
  auto* r = static_cast<PngRead*>(png_get_io_ptr(p));
  if (len > r->n - r->pos) png_error(p, "the data ends early (truncated file)");
  std::memcpy(dst, r->data + r->pos, len);
  r->pos += len;
}

struct PngErrState {
  char msg[256];
};

void pngErrorFn(png_structp p, png_const_charp m) {
  auto* s = static_cast<PngErrState*>(png_get_error_ptr(p));
  std::snprintf(s->msg, sizeof(s->msg), "%s", m ? m : "error");
  png_longjmp(p, 1);
}
void pngWarnFn(png_structp, png_const_charp) {}

// Decodes a PNG to 8-bit RGB (channels 1 or 3: alpha dropped, not composited, as PIL's convert does)
// or RGBA (channels 4). 16-bit samples are scaled to 8 bits with rounding; palettes and low bit
// depths are expanded; interlaced images are handled.
void decodePng(const uint8_t* data, size_t n, int channels, const Limits& lim, Image& out) {
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

}  // namespace

void toGray(Image& im) {
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

void decodeImage(const uint8_t* data, size_t n, int channels, const Limits& lim, const RoiFn* roi, Image& out) {
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

}  // namespace residual::image
