#!/usr/bin/env python3
"""Reference values for native image decoding and the ImageNet transforms, from PIL and torchvision.

Run with torch 2.13.0 CPU, torchvision 0.28.0 and Pillow from the local wheels:
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0+cpu torchvision==0.28.0 pillow numpy
    /tmp/tv/bin/python scripts/make-image-fixtures.py
Writes test/fixtures/images/: small generated JPEG and PNG files, PIL's decoded pixels of each (the
reference decoder: PIL uses libjpeg-turbo and libpng), and torchvision's outputs for resized crops
(given boxes, antialiased bilinear), Resize + CenterCrop, and RandomResizedCrop.get_params' centre-crop
fallback. Only torchvision's Python transforms are used (its compiled ops are not needed).
"""
import io
import json
import os
import struct
import sys
import types

import numpy as np
import torch

# The torchvision wheel may be a CUDA build whose compiled ops cannot load on a CPU-only torch; the
# transforms used here are pure Python over torch, so skip registering those ops.
sys.modules.setdefault('torchvision._meta_registrations', types.ModuleType('torchvision._meta_registrations'))
import torchvision  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402
from PIL import Image  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'images')
DT = {torch.float32: 'F32', torch.int64: 'I64', torch.uint8: 'U8'}


def save(name, tensors, meta=None):
    """A minimal safetensors writer (header JSON + raw little-endian bytes)."""
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        b = t.numpy().tobytes()
        header[k] = {'dtype': DT[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        header['__metadata__'] = {k: json.dumps(v) for k, v in meta.items()}
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def picture(h, w, seed):
    """A photo-like test image: smooth colour gradients, a few shapes, some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(x / w * 6.0 + seed),
        128 + 100 * np.cos(y / h * 5.0 - seed),
        128 + 90 * np.sin((x + y) / (w + h) * 9.0),
    ], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, max(4, min(h, w) // 3))
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, size=3)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'pillow': Image.__version__}
    tensors = {}
    files = {}
    # ---- decoding: PIL is the reference ----
    base = picture(45, 61, 1)
    cases = {
        'rgb420.jpg': (Image.fromarray(base), dict(format='JPEG', quality=90, subsampling=2)),
        'rgb444.jpg': (Image.fromarray(base), dict(format='JPEG', quality=95, subsampling=0)),
        'progressive.jpg': (Image.fromarray(base), dict(format='JPEG', quality=80, progressive=True)),
        'gray.jpg': (Image.fromarray(base).convert('L'), dict(format='JPEG', quality=90)),
        'rgb.png': (Image.fromarray(base), dict(format='PNG')),
        'rgba.png': (Image.fromarray(np.dstack([base, (np.arange(45 * 61) % 256).reshape(45, 61).astype(np.uint8)])), dict(format='PNG')),
        'gray.png': (Image.fromarray(base).convert('L'), dict(format='PNG')),
        'palette.png': (Image.fromarray(base).convert('P', palette=Image.Palette.ADAPTIVE, colors=50), dict(format='PNG')),
        'interlaced.png': (Image.fromarray(base), dict(format='PNG', interlace=1)),
    }
    for name, (im, kw) in cases.items():
        buf = io.BytesIO()
        im.save(buf, **kw)
        with open(os.path.join(OUT, name), 'wb') as f:
            f.write(buf.getvalue())
        ref = Image.open(io.BytesIO(buf.getvalue()))
        tensors[f'decode.{name}.rgb'] = torch.from_numpy(np.asarray(ref.convert('RGB')).copy())
        tensors[f'decode.{name}.l'] = torch.from_numpy(np.asarray(ref.convert('RGB').convert('L')).copy())
        files[name] = list(np.asarray(ref.convert('RGB')).shape)
    # 16-bit grayscale PNG: PIL reads it as mode I;16 / I, so the 8-bit reference is computed here
    # the way libpng's png_set_scale_16 does it: round(v * 255 / 65535).
    g16 = (picture(20, 30, 2)[..., 0].astype(np.uint32) * 257 + np.arange(600).reshape(20, 30)).astype(np.uint16)
    Image.fromarray(g16).save(os.path.join(OUT, 'gray16.png'))
    tensors['decode.gray16.png.rgb'] = torch.from_numpy(np.repeat(np.round(g16.astype(np.float64) * 255 / 65535).astype(np.uint8)[..., None], 3, axis=2))
    files['gray16.png'] = [20, 30, 3]

    # ---- geometry: resized_crop with antialias, on float tensors (no rounding) ----
    src = picture(97, 131, 3)
    Image.fromarray(src).save(os.path.join(OUT, 'geometry.png'))
    x = torch.from_numpy(src).permute(2, 0, 1).to(torch.float32)
    g = torch.Generator().manual_seed(0)
    boxes = [(0, 0, 97, 131), (10, 20, 40, 50), (3, 7, 90, 60), (50, 100, 5, 9), (1, 1, 95, 129)]
    rrc = T.RandomResizedCrop(32)
    for _ in range(6):
        torch.manual_seed(int(torch.randint(0, 1 << 30, (1,), generator=g)))
        boxes.append(tuple(int(v) for v in rrc.get_params(x, rrc.scale, rrc.ratio)))
    sizes = [(32, 32), (24, 40), (60, 70)]  # downscale, mixed, upscale
    geo = []
    for k, (i, j, h, w) in enumerate(boxes):
        size = sizes[k % len(sizes)]
        tensors[f'geometry.{k}'] = F.resized_crop(x, i, j, h, w, list(size), antialias=True).contiguous()
        geo.append({'box': [i, j, h, w], 'size': list(size)})
    # ---- evaluation: Resize(40) then CenterCrop(32) ----
    ev = T.Compose([T.Resize(40, antialias=True), T.CenterCrop(32)])
    tensors['eval.resize40.crop32'] = ev(x).contiguous()
    ev2 = T.Compose([T.Resize(37, antialias=True), T.CenterCrop(32)])
    tensors['eval.resize37.crop32'] = ev2(x).contiguous()
    # ---- RandomResizedCrop's fallback (10 failed tries): deterministic centre crops ----
    fallback = []
    # scale 1..1: no try can fit an image whose aspect ratio is outside the ratio range
    for (h, w, ratio) in [(10, 300, [3 / 4, 4 / 3]), (300, 10, [3 / 4, 4 / 3]), (100, 100, [2.0, 3.0]), (100, 100, [0.25, 0.5]), (77, 1000, [3 / 4, 4 / 3])]:
        img = torch.zeros(1, h, w)
        i, j, ch, cw = T.RandomResizedCrop.get_params(img, [1.0, 1.0], ratio)
        fallback.append({'hw': [h, w], 'ratio': ratio, 'box': [i, j, ch, cw]})
    meta.update({'files': files, 'geometry': geo, 'fallback': fallback})
    save('reference.safetensors', tensors, meta)
    print(f'wrote {len(tensors)} tensors and {len(files) + 1} images to {os.path.normpath(OUT)}')


if __name__ == '__main__':
    main()
