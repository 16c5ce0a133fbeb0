// Image decoding: JPEG (libjpeg-turbo) and PNG (libpng), chosen by the file signature. Every file is
// validated: the pixel count and side lengths are checked from the header before any pixel is
// decoded, and a corrupt or truncated file is an ImageError, never a crash.
#pragma once
#include <cstddef>
#include <functional>

#include "image/types.h"

namespace residual::image {

// Given the full image size (height, width), the region that will be read.
using RoiFn = std::function<Box(int64_t, int64_t)>;

bool isPng(const uint8_t* d, size_t n);
bool isJpeg(const uint8_t* d, size_t n);

// Decodes PNG or JPEG (by signature) to `channels` (1, 3, or 4 = RGBA) channels. `roi` (may be null)
// chooses the region to read from the full size: only that region of a JPEG is decoded (its pixels
// are the same as a full decode's); a PNG is decoded whole, and the region is read from it.
void decodeImage(const uint8_t* data, size_t n, int channels, const Limits& lim, const RoiFn* roi, Image& out);

// Luma with the ITU-R 601-2 weights (as PIL's "L" conversion), rounded.
void toGray(Image& im);

}  // namespace residual::image
