// The streaming loader's per-image transform, as torchvision's: decode, then RandomResizedCrop
// ('train'), Resize(shorter side) + CenterCrop ('eval'), or a plain resize ('resize'), with
// antialiased bilinear resampling and an optional horizontal flip, rounded to uint8 as PIL's resize.
#pragma once
#include <cstddef>
#include <cstdint>

#include "image/crop.h"
#include "image/types.h"

namespace residual::image {

enum class Transform { Train, Eval, Resize };

struct TransformSpec {
  Transform kind = Transform::Train;
  int64_t outH = 224, outW = 224;  // 1..8192
  int64_t resize = 256;            // 'eval': the shorter side before the centre crop (>= outH, outW)
  RrcParams rrc;                   // 'train'
  bool flip = true;                // 'train': random horizontal flip with p = 0.5
  int channels = 3;                // 1 or 3
  Limits lim;
};

// Decodes the encoded image `data` and writes its transform to dst ([channels, outH, outW] uint8);
// `r` is the sample's splitmix stream (image/splitmix.h). `im` is scratch space, reused across calls.
// A bad file, or one over the limits, is an ImageError.
void transformImage(const uint8_t* data, size_t n, const TransformSpec& spec, uint64_t r, uint8_t* dst, Image& im);

}  // namespace residual::image
