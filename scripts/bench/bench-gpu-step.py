#!/usr/bin/env python3
"""The PyTorch side of scripts/bench/bench-gpu-step.mjs: the same training step on the same network, driven
trial by trial (interleaved with residual's trials) over stdin/stdout, one JSON object per line.

  python scripts/bench/bench-gpu-step.py serve

Requests: {"cmd": "info"} | {"cmd": "setup", "variant": {...}} | {"cmd": "trial", "steps": N} |
{"cmd": "teardown"} | {"cmd": "flops", "variant": {...}}. A variant has model, batch, image, classes,
warmup, cudnnBenchmark, fused, channelsLast, amp, h2d, cudaGraphs (see bench-gpu-step.mjs).

A step: forward, cross-entropy, zero_grad(set_to_none=True), backward, SGD (momentum 0.9, Nesterov,
weight decay 5e-4 on conv/linear weights only; fused=True/False as the variant says). With cudaGraphs:
torch.cuda.graphs' whole-network capture recipe (warm-up on a side stream, grads set to None before
capture so backward allocates them from the graph's pool, then copy into the static input + replay).
The networks are those of the ResNet parity fixtures (scripts/fixtures/make-resnet-fixtures.py), as residual's.
"""
import importlib.util
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location('resnet_defs', os.path.join(_here, '..', 'fixtures', 'make-resnet-fixtures.py'))
defs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(defs)


def make_model(name, classes):
    blocks = {'resnet18': (defs.BasicBlock, [2, 2, 2, 2]), 'resnet34': (defs.BasicBlock, [3, 4, 6, 3]),
              'resnet50': (defs.Bottleneck, [3, 4, 6, 3]), 'resnet101': (defs.Bottleneck, [3, 4, 23, 3]),
              'resnet152': (defs.Bottleneck, [3, 8, 36, 3])}
    if name in blocks:
        b, layers = blocks[name]
        try:
            return defs.ResNet(b, layers, num_classes=classes)
        except TypeError:
            return defs.ResNet(b, layers)
    if name.startswith('resnet') and name[6:].isdigit():
        try:
            return defs.CifarResNet(int(name[6:]), num_classes=classes)
        except TypeError:
            return defs.CifarResNet(int(name[6:]))
    raise ValueError('unknown model ' + name)


class Variant:
    def __init__(self, v):
        self.v = v
        dev = torch.device(v.get('device', 'cuda'))
        torch.backends.cudnn.benchmark = bool(v.get('cudnnBenchmark'))
        torch.manual_seed(0)
        fmt = torch.channels_last if v.get('channelsLast') else torch.contiguous_format
        self.model = make_model(v['model'], int(v['classes'])).to(dev).to(memory_format=fmt)
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        self.opt = torch.optim.SGD([{'params': decay, 'weight_decay': 5e-4}, {'params': no_decay, 'weight_decay': 0}],
                                   lr=0.01, momentum=0.9, nesterov=True, fused=bool(v.get('fused')),
                                   foreach=None if v.get('fused') else True)
        b, s = int(v['batch']), int(v['image'])
        self.x = torch.randn(b, 3, s, s, device=dev).contiguous(memory_format=fmt)
        self.y = torch.randint(0, int(v['classes']), (b,), device=dev)
        self.h2d = bool(v.get('h2d'))
        if self.h2d:
            self.xh = self.x.cpu().pin_memory()
            self.yh = self.y.cpu().pin_memory()
        self.amp = bool(v.get('amp'))
        self.dev = dev
        self.graph = None
        if dev.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        if v.get('cudaGraphs'):
            self.capture(int(v.get('warmup', 3)))
        else:
            for _ in range(int(v.get('warmup', 10))):
                self.step()
        self.sync()

    def sync(self):
        if self.dev.type == 'cuda':
            torch.cuda.synchronize()

    def batch(self):
        if self.h2d:
            return self.xh.to(self.dev, non_blocking=True), self.yh.to(self.dev, non_blocking=True)
        return self.x, self.y

    def loss(self, x, y):
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.amp):
            return F.cross_entropy(self.model(x), y)

    def step(self):
        x, y = self.batch()
        if self.graph is not None:
            self.sx.copy_(x)
            self.sy.copy_(y)
            self.graph.replay()
            return
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        self.loss(x, y).backward()
        self.opt.step()

    def capture(self, warmup):
        self.sx = self.x.clone()
        self.sy = self.y.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(max(3, warmup)):
                self.opt.zero_grad(set_to_none=True)
                self.loss(self.sx, self.sy).backward()
                self.opt.step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            self.static_loss = self.loss(self.sx, self.sy)
            self.static_loss.backward()
            self.opt.step()
        self.graph = g

    def trial(self, steps):
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return time.perf_counter() - t0


def flops_per_step(v):
    from torch.utils.flop_counter import FlopCounterMode
    var = Variant({**v, 'warmup': 1, 'cudaGraphs': False, 'amp': False})
    with FlopCounterMode(display=False) as fc:
        var.model.train()
        var.opt.zero_grad(set_to_none=True)
        var.loss(var.x, var.y).backward()
    return fc.get_total_flops()


def main():
    if len(sys.argv) < 2 or sys.argv[1] != 'serve':
        print(__doc__)
        sys.exit(2)
    cur = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cmd = req['cmd']
            if cmd == 'info':
                out = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),
                       'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
            elif cmd == 'setup':
                cur = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                cur = Variant(req['variant'])
                out = {'ok': True}
            elif cmd == 'trial':
                out = {'seconds': cur.trial(int(req['steps']))}
            elif cmd == 'teardown':
                peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
                cur = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                out = {'peakBytes': peak}
            elif cmd == 'flops':
                out = {'flopsPerStep': flops_per_step(req['variant'])}
            else:
                out = {'error': 'unknown cmd ' + str(cmd)}
        except Exception as e:  # reported to the Node side, which names the variant
            out = {'error': f'{type(e).__name__}: {e}'}
        sys.stdout.write(json.dumps(out) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
