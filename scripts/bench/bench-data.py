#!/usr/bin/env python3
"""Helpers for scripts/bench/bench-data.mjs (torch 2.13.0 CPU, torchvision 0.28.0, Pillow from the local wheels).

  bench-data.py gen DIR N [--classes C] [--seed S]
      writes an ImageNet-layout folder of N generated 500x375 JPEGs (ImageNet's typical size; quality
      90, about 60 KB each): DIR/train/<class>/<n>.JPEG and DIR/val/ with N/10
  bench-data.py torch DIR --workers W --batch B --images N
      PyTorch's DataLoader with torchvision's ImageFolder (PIL decoding) and RandomResizedCrop(224) +
      RandomHorizontalFlip + ToTensor + Normalize; prints images per second as JSON.
"""
import argparse
import json
import os
import sys
import time
import types

import numpy as np


def picture(rng, h, w):
    """Photo-like: smooth colour fields, random ellipses and texture noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(2, 9, size=6)
    p = rng.uniform(0, 6.28, size=6)
    img = np.stack([
        128 + 90 * np.sin(x / w * f[0] + p[0]) * np.cos(y / h * f[1] + p[1]),
        128 + 90 * np.sin(y / h * f[2] + p[2]) * np.cos(x / w * f[3] + p[3]),
        128 + 90 * np.sin((x + y) / (w + h) * f[4] + p[4]),
    ], axis=-1)
    for _ in range(int(rng.integers(3, 8))):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(10, h // 2), rng.integers(10, w // 2)
        img[((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1] = rng.integers(0, 256, size=3)
    img += rng.normal(0, 9, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def gen(args):
    from PIL import Image
    rng = np.random.default_rng(args.seed)
    for split, n in (('train', args.n), ('val', max(args.classes, args.n // 10))):
        for k in range(n):
            d = os.path.join(args.dir, split, f'n{k % args.classes:08d}')
            os.makedirs(d, exist_ok=True)
            Image.fromarray(picture(rng, 375, 500)).save(os.path.join(d, f'{k:07d}.JPEG'), quality=90)
    print(json.dumps({'dir': args.dir, 'train': args.n}))


def bench_torch(args):
    import torch
    sys.modules.setdefault('torchvision._meta_registrations', types.ModuleType('torchvision._meta_registrations'))
    from torchvision import datasets, transforms as T
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(args.dir, transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True, persistent_workers=False, prefetch_factor=2)
    n = 0
    warm = None
    t0 = time.perf_counter()
    for x, y in dl:
        n += x.shape[0]
        if warm is None:  # the first batch includes worker start-up
            warm = (time.perf_counter(), n)
        if n >= args.images:
            break
    t1 = time.perf_counter()
    print(json.dumps({'images': n - warm[1], 'seconds': t1 - warm[0], 'imagesPerSec': (n - warm[1]) / (t1 - warm[0]), 'torch': torch.__version__, 'startup': warm[0] - t0}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    g = sub.add_parser('gen')
    g.add_argument('dir')
    g.add_argument('n', type=int)
    g.add_argument('--classes', type=int, default=10)
    g.add_argument('--seed', type=int, default=0)
    b = sub.add_parser('torch')
    b.add_argument('dir')
    b.add_argument('--workers', type=int, default=2)
    b.add_argument('--batch', type=int, default=64)
    b.add_argument('--images', type=int, default=1024)
    args = ap.parse_args()
    gen(args) if args.cmd == 'gen' else bench_torch(args)


if __name__ == '__main__':
    main()
