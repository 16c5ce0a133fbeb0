#!/usr/bin/env python3
"""Reference values from PyTorch itself for the core ops and the optimizers.

Run with the local torch wheel (pip install torch==2.13.0+cpu from the local wheels):
    python3 scripts/make-core-fixtures.py
Writes small safetensors files into test/fixtures/core/. Each case stores its inputs, outputs and
gradients (for a fixed upstream gradient), so tests compare our native ops against PyTorch's.
"""
import json
import os
import struct

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'core')
DT = {torch.float32: 'F32', torch.float64: 'F64', torch.int64: 'I64', torch.uint8: 'U8', torch.bool: 'BOOL'}


def save(name, tensors, meta=None):
    """A minimal safetensors writer (header JSON + raw little-endian bytes)."""
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        b = t.numpy().tobytes() if t.dtype != torch.bool else t.to(torch.uint8).numpy().tobytes()
        header[k] = {'dtype': DT[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        header['__metadata__'] = {k: json.dumps(v) for k, v in meta.items()}
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name + '.safetensors'), 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def grads(out, inputs):
    g = torch.randn_like(out)
    res = torch.autograd.grad(out, inputs, g)
    return g, res


def conv_cases():
    cases = [
        dict(name='conv_basic', n=2, cin=3, cout=4, hw=7, k=3, stride=1, padding=1, dilation=1, groups=1),
        dict(name='conv_stride2', n=2, cin=4, cout=6, hw=9, k=3, stride=2, padding=1, dilation=1, groups=1),
        dict(name='conv_groups', n=1, cin=4, cout=8, hw=6, k=3, stride=1, padding=0, dilation=1, groups=2),
        dict(name='conv_dilation', n=1, cin=2, cout=3, hw=9, k=3, stride=1, padding=2, dilation=2, groups=1),
        dict(name='conv_1x1_s2', n=2, cin=4, cout=8, hw=8, k=1, stride=2, padding=0, dilation=1, groups=1),
        dict(name='conv_same', n=1, cin=3, cout=2, hw=8, k=5, stride=1, padding='same', dilation=1, groups=1),
    ]
    for c in cases:
        x = torch.randn(c['n'], c['cin'], c['hw'], c['hw'], requires_grad=True)
        w = torch.randn(c['cout'], c['cin'] // c['groups'], c['k'], c['k'], requires_grad=True)
        b = torch.randn(c['cout'], requires_grad=True)
        y = F.conv2d(x, w, b, stride=c['stride'], padding=c['padding'], dilation=c['dilation'], groups=c['groups'])
        g, (gx, gw, gb) = grads(y, [x, w, b])
        save(c['name'], dict(x=x, w=w, b=b, y=y, gy=g, gx=gx, gw=gw, gb=gb),
             {k: c[k] for k in ('stride', 'padding', 'dilation', 'groups')})


def bn_cases():
    for training in (True, False):
        x = torch.randn(4, 3, 5, 5, requires_grad=True)
        w = torch.rand(3, requires_grad=True) + 0.5
        w = w.detach().requires_grad_()
        b = torch.randn(3, requires_grad=True)
        rm = torch.randn(3)
        rv = torch.rand(3) + 0.5
        rm0, rv0 = rm.clone(), rv.clone()
        y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-4)
        g, (gx, gw, gb) = grads(y, [x, w, b])
        save('bn_train' if training else 'bn_eval',
             dict(x=x, w=w, b=b, rm0=rm0, rv0=rv0, rm1=rm, rv1=rv, y=y, gy=g, gx=gx, gw=gw, gb=gb),
             dict(momentum=0.2, eps=1e-4))


def pool_cases():
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    y = F.max_pool2d(x, 3, stride=2, padding=1)
    g, (gx,) = grads(y, [x])
    save('maxpool', dict(x=x, y=y, gy=g, gx=gx), dict(k=3, stride=2, padding=1))
    y = F.avg_pool2d(x, 2, stride=2)
    g, (gx,) = grads(y, [x])
    save('avgpool', dict(x=x, y=y, gy=g, gx=gx), dict(k=2, stride=2, padding=0))
    y = F.adaptive_avg_pool2d(x, (1, 1))
    g, (gx,) = grads(y, [x])
    save('adaptiveavgpool', dict(x=x, y=y, gy=g, gx=gx))


def linear_and_losses():
    x = torch.randn(5, 7, requires_grad=True)
    w = torch.randn(3, 7, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = F.linear(x, w, b)
    g, (gx, gw, gb) = grads(y, [x, w, b])
    save('linear', dict(x=x, w=w, b=b, y=y, gy=g, gx=gx, gw=gw, gb=gb))
    logits = torch.randn(6, 5, requires_grad=True)
    target = torch.tensor([0, 4, 2, 2, 1, 3])
    out = {}
    for ls in (0.0, 0.1):
        for red in ('mean', 'sum', 'none'):
            loss = F.cross_entropy(logits, target, label_smoothing=ls, reduction=red)
            (gl,) = torch.autograd.grad(loss.sum(), [logits])
            out[f'loss_{red}_{int(ls * 10)}'] = loss
            out[f'grad_{red}_{int(ls * 10)}'] = gl
    save('cross_entropy', dict(logits=logits, target=target, **out))
    p = torch.randn(6, 5)
    y = torch.randn(6, 5)
    save('mse', dict(p=p, y=y, loss=F.mse_loss(p, y)))


def optim_cases():
    """Three steps of each optimizer on two parameters with a fixed gradient sequence."""
    configs = {
        'sgd_plain': (torch.optim.SGD, dict(lr=0.1)),
        'sgd_momentum_wd': (torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-2, dampening=0.1)),
        'sgd_nesterov': (torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
        'adam': (torch.optim.Adam, dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-3)),
        'adam_amsgrad': (torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
        'adamw': (torch.optim.AdamW, dict(lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)),
    }
    for name, (cls, kw) in configs.items():
        p1 = torch.randn(4, 3, requires_grad=True)
        p2 = torch.randn(5, requires_grad=True)
        t = dict(p1_0=p1.detach().clone(), p2_0=p2.detach().clone())
        opt = cls([p1, p2], foreach=False, **kw)
        for s in range(1, 4):
            g1, g2 = torch.randn(4, 3), torch.randn(5)
            p1.grad, p2.grad = g1.clone(), g2.clone()
            opt.step()
            t[f'g1_{s}'], t[f'g2_{s}'] = g1, g2
            t[f'p1_{s}'], t[f'p2_{s}'] = p1.detach().clone(), p2.detach().clone()
        save('optim_' + name, t, {'kw': {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}})


if __name__ == '__main__':
    torch.manual_seed(1234)
    conv_cases()
    bn_cases()
    pool_cases()
    linear_and_losses()
    optim_cases()
    print('fixtures written to', os.path.normpath(OUT), 'with torch', torch.__version__)
