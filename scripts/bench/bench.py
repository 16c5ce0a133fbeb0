#!/usr/bin/env python3
"""The PyTorch (eager) side of `npm run bench` (scripts/bench/bench.mjs), which starts this script and drives
it trial by trial so that both sides run interleaved on the same machine under the same load.

  python scripts/bench/bench.py serve            JSON requests on stdin, one per line; one JSON reply per line
  python scripts/bench/bench.py mem '<json>'     a memory run in this fresh process; prints one JSON line

The models are the ones the ResNet parity fixtures use (scripts/fixtures/make-resnet-fixtures.py: the
torchvision ResNet-50 definition and the CIFAR ResNets of He et al. 2015 with option-A shortcuts), so
both sides train the same network with the same optimizer (SGD, momentum, weight decay), the same loss
and the same batch. The work per request mirrors what bench.mjs does on the residual side; keep the two
in step.
"""
import importlib.util
import json
import os
import platform
import resource
import sys
import time

import torch
import torch.nn.functional as F

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location('resnet_defs', os.path.join(_here, '..', 'fixtures', 'make-resnet-fixtures.py'))
defs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(defs)


def make_model(name):
    if name.startswith('resnet') and name[6:].isdigit() and int(name[6:]) in (18, 34, 50, 101, 152):
        depth = int(name[6:])
        if depth == 18:
            return defs.ResNet(defs.BasicBlock, [2, 2, 2, 2])
        if depth == 34:
            return defs.ResNet(defs.BasicBlock, [3, 4, 6, 3])
        if depth == 50:
            return defs.ResNet(defs.Bottleneck, [3, 4, 6, 3])
        if depth == 101:
            return defs.ResNet(defs.Bottleneck, [3, 4, 23, 3])
        return defs.ResNet(defs.Bottleneck, [3, 8, 36, 3])
    if name.startswith('resnet'):
        return defs.CifarResNet(int(name[6:]))
    raise ValueError('unknown model ' + name)


def sync(dev):
    if dev.startswith('cuda'):
        torch.cuda.synchronize()


class TrainStep:
    """One training step: forward, cross-entropy, zero_grad (set to None), backward, SGD step."""

    def __init__(self, c):
        dev = c.get('device', 'cpu')
        self.dev = dev
        self.amp = c.get('amp', False)
        torch.manual_seed(0)
        model = make_model(c['model'])
        classes = 1000 if c['image'] >= 64 else 10
        model = model.to(dev)
        cl = c.get('channelsLast', False)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        x = torch.randn(c['batch'], 3, c['image'], c['image'], device=dev)
        self.x = x.contiguous(memory_format=torch.channels_last) if cl else x
        self.y = (torch.arange(c['batch'], device=dev) % classes).long()
        self.opt = torch.optim.SGD(model.parameters(), lr=c.get('lr', 0.01), momentum=0.9, weight_decay=5e-4,
                                   foreach=c.get('foreach', None))

    def step(self):
        if self.amp:
            with torch.autocast('cuda' if self.dev.startswith('cuda') else 'cpu', dtype=torch.bfloat16):
                loss = F.cross_entropy(self.model(self.x), self.y)
        else:
            loss = F.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def run(self, steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.dev)
        self.cpu_ms = (time.process_time() - c0) * 1000.0
        return (time.perf_counter() - t0) * 1000.0


def tiny_cases(dev):
    a = torch.ones(1, device=dev)
    b = torch.ones(1, device=dev)
    m = torch.ones(1, 1, device=dev)
    x = torch.randn(1, 3, 8, 8, device=dev)
    w = torch.randn(4, 3, 3, 3, device=dev)
    xg = x.clone().requires_grad_()
    wg = w.clone().requires_grad_()

    def fb():
        y = F.conv2d(xg, wg, None, padding=1)
        s = y.sum()
        s.backward()
        xg.grad = None
        wg.grad = None

    return {
        'add': lambda: torch.add(a, b),
        'add scalar': lambda: torch.add(a, 1),
        'sub': lambda: torch.sub(a, b),
        'mul': lambda: torch.mul(a, b),
        'div': lambda: torch.div(a, b),
        'relu': lambda: torch.relu(a),
        'exp': lambda: torch.exp(a),
        'sum': lambda: torch.sum(a),
        'matmul 1x1': lambda: torch.matmul(m, m),
        'view': lambda: a.view(1, 1),
        'conv2d fwd': lambda: F.conv2d(x, w, None, padding=1),
        'conv2d fwd+bwd': fb,
    }


def time_op(fn, dev, min_ms):
    for _ in range(200):
        fn()
    n = 100
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        sync(dev)
        ns = time.perf_counter_ns() - t0
        if ns > min_ms * 1e6:
            return ns / n
        n *= 2


def matmul_tflops(dev, n, dtype, reps):
    dt = {'bfloat16': torch.bfloat16, 'float32': torch.float32, 'float16': torch.float16}[dtype]
    a = torch.randn(n, n, device=dev, dtype=dt)
    b = torch.randn(n, n, device=dev, dtype=dt)
    for _ in range(3):
        torch.mm(a, b)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync(dev)
    s = time.perf_counter() - t0
    return 2.0 * n ** 3 * reps / s / 1e12


def rss_kb():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * (os.sysconf('SC_PAGE_SIZE') // 1024)
    except OSError:
        return None


def peak_rss_kb():
    # VmHWM: getrusage's ru_maxrss survives exec, so it would report the spawning parent's peak
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def info():
    d = {'torch': torch.__version__, 'python': platform.python_version(), 'threads': torch.get_num_threads(),
         'mkldnn': torch.backends.mkldnn.is_available(), 'cpuCapability': torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        d['gpu'] = torch.cuda.get_device_name(0)
        d['cuda'] = torch.version.cuda
        d['cudnn'] = torch.backends.cudnn.version()
    return d


def serve():
    states = {}
    cases = {}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        try:
            op = req['op']
            if op == 'init':
                torch.set_num_threads(req['threads'])
                if req.get('cudnnBenchmark') and torch.cuda.is_available():
                    torch.backends.cudnn.benchmark = True
                out = info()
            elif op == 'threads':
                torch.set_num_threads(req['threads'])
                out = {'threads': torch.get_num_threads()}
            elif op == 'tiny':
                dev = req.get('device', 'cpu')
                if dev not in cases:
                    cases[dev] = tiny_cases(dev)
                out = {'ns': time_op(cases[dev][req['name']], dev, req.get('minMs', 300))}
            elif op == 'setup':
                states[req['id']] = TrainStep(req['config'])
                out = {}
            elif op == 'run':
                st = states[req['id']]
                out = {'ms': st.run(req['steps']), 'cpuMs': st.cpu_ms}
            elif op == 'free':
                states.pop(req['id'], None)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                out = {}
            elif op == 'matmul':
                out = {'tflops': matmul_tflops(req['device'], req['n'], req['dtype'], req['reps'])}
            elif op == 'quit':
                print(json.dumps({'ok': True}), flush=True)
                return
            else:
                raise ValueError('unknown request ' + op)
            out['ok'] = True
        except Exception as e:  # reported to bench.mjs, which stops with the message
            out = {'ok': False, 'error': '%s: %s' % (type(e).__name__, e)}
        print(json.dumps(out), flush=True)


def mem(c):
    """Peak RSS (and peak CUDA memory) of `steps` training steps in this fresh process; RSS sampled."""
    torch.set_num_threads(c['threads'])
    base = rss_kb()
    s = TrainStep(c)
    samples = []
    every = c.get('sampleEvery', 0)
    for i in range(c['steps']):
        s.step()
        if every and (i + 1) % every == 0:
            samples.append([i + 1, rss_kb()])
    sync(s.dev)
    out = {'baselineRssKB': base, 'peakRssKB': peak_rss_kb(),
           'finalRssKB': rss_kb(), 'samples': samples}
    if s.dev.startswith('cuda'):
        out['peakCudaBytes'] = torch.cuda.max_memory_allocated()
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    if len(sys.argv) >= 2 and sys.argv[1] == 'serve':
        serve()
    elif len(sys.argv) >= 3 and sys.argv[1] == 'mem':
        mem(json.loads(sys.argv[2]))
    elif len(sys.argv) >= 2 and sys.argv[1] == 'info':
        print(json.dumps(info()))
    else:
        print(__doc__)
        sys.exit(2)
