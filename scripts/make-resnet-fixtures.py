#!/usr/bin/env python3
"""Reference ResNets in PyTorch and the parity fixtures under test/fixtures/resnet/.

The model definitions below are written for this project and mirror the structure and state-dict key
names of torchvision's resnet.py (torchvision's compiled ops do not load against the CPU torch wheel,
and the model code does not need them), plus the CIFAR ResNets of He et al. 2015 (option A shortcuts)
and the pre-activation ResNets of He et al. 2016.

Fixtures stay small because no weights are stored: Python torch and the project's libtorch are the same
version and share the CPU generator, so after manual_seed(s) torch.randn/rand give identical numbers in
both. Each fixture stores the seed and the recipe (fill_weights below, re-implemented in the tests),
checksums of the generated weights (so a generator drift is caught as such), an input batch, and the
expected logits, loss and gradients in eval and train mode.

Usage: python3 scripts/make-resnet-fixtures.py  (writes test/fixtures/resnet/*.safetensors, keys.json)
"""
import copy
import hashlib
import json
import math
import os
import sys
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'resnet')
RECIPE_VERSION = '2'


# ---------------------------------------------------------------- torchvision-style ImageNet ResNets
def conv3x3(cin, cout, stride=1, groups=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    # stride on the 3x3 convolution (torchvision's "ResNet v1.5")
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, in_channels=3, groups=1, width_per_group=64):
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        he_init(self)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def he_init(model):
    # torchvision's initialisation, used by every model here: He normal (fan_out) for convolutions,
    # BN weight 1 and bias 0; Linear keeps PyTorch's default.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


# ---------------------------------------------------------------- CIFAR ResNets (He et al. 2015)
class ShortcutA(nn.Module):
    """Option A: parameter-free, subsample by the stride and zero-pad the new channels."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.cout - self.cin
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class CifarBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, plain=False):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.plain = plain
        self.downsample = None if plain or (stride == 1 and inplanes == planes) else ShortcutA(inplanes, planes, stride)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.plain:
            return self.relu(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10, in_channels=3, plain=False):
        super().__init__()
        assert (depth - 2) % 6 == 0
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.inplanes = 16
        self.layer1 = self._make_layer(16, n, 1, plain)
        self.layer2 = self._make_layer(32, n, 2, plain)
        self.layer3 = self._make_layer(64, n, 2, plain)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        he_init(self)

    def _make_layer(self, planes, n, stride, plain):
        layers = []
        for i in range(n):
            layers.append(CifarBlock(self.inplanes, planes, stride if i == 0 else 1, plain))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- pre-activation ResNets (He et al. 2016)
class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(conv1x1(inplanes, planes, stride))

    def forward(self, x):
        preact = self.relu(self.bn1(x))
        # a projection shortcut takes the pre-activated input, as in He et al.'s code
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.conv2(self.relu(self.bn2(self.conv1(preact))))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(conv1x1(inplanes, planes * 4, stride))

    def forward(self, x):
        preact = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, depth, num_classes=10, in_channels=3, block='bottleneck', widen=1):
        super().__init__()
        if block == 'bottleneck':
            assert (depth - 2) % 9 == 0
            n, blk = (depth - 2) // 9, PreActBottleneck
        else:
            assert (depth - 2) % 6 == 0
            n, blk = (depth - 2) // 6, PreActBlock
        self.conv1 = conv3x3(in_channels, 16)
        self.inplanes = 16
        self.layer1 = self._make_layer(blk, 16 * widen, n, 1)
        self.layer2 = self._make_layer(blk, 32 * widen, n, 2)
        self.layer3 = self._make_layer(blk, 64 * widen, n, 2)
        self.bn = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        he_init(self)

    def _make_layer(self, blk, planes, n, stride):
        layers = []
        for i in range(n):
            layers.append(blk(self.inplanes, planes, stride if i == 0 else 1))
            self.inplanes = planes * blk.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- the model list (registry names)
def make(name, **kw):
    imagenet = {
        'resnet18': (BasicBlock, [2, 2, 2, 2], {}),
        'resnet34': (BasicBlock, [3, 4, 6, 3], {}),
        'resnet50': (Bottleneck, [3, 4, 6, 3], {}),
        'resnet101': (Bottleneck, [3, 4, 23, 3], {}),
        'resnet152': (Bottleneck, [3, 8, 36, 3], {}),
        'resnext50_32x4d': (Bottleneck, [3, 4, 6, 3], dict(groups=32, width_per_group=4)),
        'wide_resnet50_2': (Bottleneck, [3, 4, 6, 3], dict(width_per_group=128)),
    }
    if name in imagenet:
        blk, layers, extra = imagenet[name]
        return ResNet(blk, layers, **extra, **kw)
    if name.startswith('resnet'):
        return CifarResNet(int(name[6:]), **kw)
    if name.startswith('plain'):
        return CifarResNet(int(name[5:]), plain=True, **kw)
    if name.startswith('wrn'):  # WRN-d-k (Zagoruyko & Komodakis): pre-activation basic units, depth d-2 here
        d, k = name[3:].split('_')
        return PreActResNet(int(d) - 2, block='basic', widen=int(k), **kw)
    if name.startswith('preact_basic'):
        return PreActResNet(int(name[12:]), block='basic', **kw)
    if name.startswith('preact'):
        return PreActResNet(int(name[6:]), **kw)
    raise KeyError(name)


ALL_MODELS = ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext50_32x4d', 'wide_resnet50_2',
              'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110', 'resnet1202',
              'plain20', 'plain32', 'plain44', 'plain56', 'plain110', 'plain1202',
              'preact_basic20', 'preact_basic56', 'preact_basic110', 'wrn16_4', 'wrn16_8', 'wrn28_10',
              'preact164', 'preact1001']
# model, input size, default num_classes of its family (ImageNet models get 10 here: smaller fc)
FIXTURES = [('resnet18', 64), ('resnet50', 64), ('resnext50_32x4d', 64), ('resnet20', 32), ('plain20', 32),
            ('preact164', 32), ('preact_basic20', 32)]


# ---------------------------------------------------------------- fixtures
def uniform_from_rand(shape, lo, hi):
    """Values in [lo, hi) from torch.rand, mapped in float64 and rounded once to float32. rand's float32
    values are the same on every CPU kernel (libtorch's vectorised randn and uniform_(a, b) are not: they
    differ in the last bits between ATEN_CPU_CAPABILITY=default and AVX2), and the float64 mapping is
    IEEE arithmetic (exact multiply by 2, exact subtract, one rounded multiply, one rounded cast), so the
    weights are identical on every CPU and in the TypeScript re-implementation."""
    r = torch.rand(shape).double()
    return (r.mul(2).sub(1).mul((hi - lo) / 2).add((hi + lo) / 2)).float()


def fill_weights(model, seed):
    """The weight recipe, re-implemented in test/resnet-parity.test.ts: state-dict keys in order."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            leaf = key.rsplit('.', 1)[-1]
            if leaf == 'num_batches_tracked':
                t.fill_(7)
            elif leaf == 'running_mean':
                t.copy_(uniform_from_rand(t.shape, -0.2, 0.2))
            elif leaf == 'running_var':
                t.copy_(uniform_from_rand(t.shape, 0.75, 1.25))
            elif t.dim() == 4:  # convolution: He-scaled (variance 2 / fan_in) so activations stay O(1)
                fan_in = t.shape[1] * t.shape[2] * t.shape[3]
                a = math.sqrt(6.0 / fan_in)
                t.copy_(uniform_from_rand(t.shape, -a, a))
            elif t.dim() == 2:  # fc weight: variance 1 / fan_in
                a = math.sqrt(3.0 / t.shape[1])
                t.copy_(uniform_from_rand(t.shape, -a, a))
            elif leaf == 'weight':  # BN scale: keep residual branches smaller than the identity
                t.copy_(uniform_from_rand(t.shape, 0.25, 0.75))
            else:  # biases
                t.copy_(uniform_from_rand(t.shape, -0.2, 0.2))


def sums(model):
    """Per state-dict entry: sum and sum of squares in float64, to check generated weights."""
    sd = model.state_dict()
    s = torch.tensor([v.double().sum().item() for v in sd.values()], dtype=torch.float64)
    q = torch.tensor([v.double().pow(2).sum().item() for v in sd.values()], dtype=torch.float64)
    return s, q


def key_lines(model):
    return [f'{k}:{list(v.shape)}' for k, v in model.state_dict().items()]


def save_safetensors(path, tensors, metadata):
    codes = {torch.float32: 'F32', torch.float64: 'F64', torch.int64: 'I64'}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {'dtype': codes[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header['__metadata__'] = metadata
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def run_pass(model, x, target, bn_names):
    model.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    loss = F.cross_entropy(logits, target)
    loss.backward()
    out = {'logits': logits.detach(), 'loss': loss.detach().reshape(1), 'input_grad': xg.grad,
           'conv1_weight_grad': model.conv1.weight.grad}
    sd = model.state_dict()
    for b in bn_names:
        out[f'{b}.running_mean'] = sd[f'{b}.running_mean'].clone()
        out[f'{b}.running_var'] = sd[f'{b}.running_var'].clone()
        out[f'{b}.num_batches_tracked'] = sd[f'{b}.num_batches_tracked'].clone()
    return out


U32 = 2.0 ** -24  # float32 unit roundoff


def rel_err(a, ref):
    """Norm-wise relative error of a against the float64 reference."""
    d = (a.double() - ref).norm().item()
    n = ref.norm().item()
    return d / n if n > 0 else d


def float32_noise(model32, x, target, bn_names, mode, ref):
    """How far float32 arithmetic itself lands from the float64 result, for each output: the largest
    norm-wise relative error over float32 runs that differ only in rounding (1 and 2 intra-op threads,
    which change reduction orders and kernels' blocking, and a run on inputs and weights perturbed by one
    float32 rounding, u = 2^-24, each). This is the conditioning of the computation times u, not a
    property of one CPU: runs under ATEN_CPU_CAPABILITY=default and AVX2 give the same figures within 2x."""
    noise = {}
    g = torch.Generator().manual_seed(99)
    for variant in ('threads1', 'threads2', 'perturbed'):
        torch.set_num_threads(1 if variant == 'threads1' else 2)
        m = copy.deepcopy(model32)
        m.train(mode == 'train')
        xi = x
        if variant == 'perturbed':
            with torch.no_grad():
                for p in m.parameters():
                    p.mul_(1 + U32 * torch.randn(p.shape, generator=g))
            xi = x * (1 + U32 * torch.randn(x.shape, generator=g))
        out = run_pass(m, xi, target, bn_names)
        for k, v in out.items():
            if v.is_floating_point():
                noise[k] = max(noise.get(k, 0.0), rel_err(v, ref[k]))
    torch.set_num_threads(2)
    return noise


def make_fixture(name, size, init_seed=0, weight_seed=1):
    """The reference is computed in float64 (the weights are the float32 recipe's values, widened):
    tests compare residual in float64 tightly against it, and residual in float32 norm-wise within a
    bound derived from the float32 noise recorded here (f32_noise). A float32 reference would hold one
    CPU's rounding, which another CPU does not reproduce."""
    torch.manual_seed(init_seed)
    model = make(name, num_classes=10)
    init_sum, init_sq = sums(model)  # the default initialisation after manual_seed(init_seed)
    fill_weights(model, weight_seed)
    w_sum, w_sq = sums(model)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 3, size, size, generator=g)
    target = torch.tensor([3, 7], dtype=torch.int64)
    bns = [k[:-len('.running_mean')] for k in model.state_dict() if k.endswith('running_mean')]
    bn_names = [bns[0], bns[-1]]
    tensors = {'input': x, 'target': target, 'init_sum': init_sum, 'init_sqsum': init_sq,
               'weight_sum': w_sum, 'weight_sqsum': w_sq}
    model64 = copy.deepcopy(model).double()
    noise = {}
    for mode in ('eval', 'train'):
        # float32 noise runs start from the state the reference pass starts from (train mode updates
        # the running statistics, after the eval pass)
        state32 = copy.deepcopy(model64).float()
        model64.train(mode == 'train')
        ref = run_pass(model64, x.double(), target, bn_names)
        for k, v in ref.items():
            tensors[f'{mode}.{k}'] = v
        for k, v in float32_noise(state32, x, target, bn_names, mode, ref).items():
            noise[f'{mode}.{k}'] = float(f'{v:.3g}')
    meta = {'model': name, 'num_classes': '10', 'init_seed': str(init_seed), 'weight_seed': str(weight_seed),
            'recipe': RECIPE_VERSION, 'reference': 'float64', 'f32_noise': json.dumps(noise),
            'bn_names': json.dumps(bn_names), 'keys': json.dumps(key_lines(model)), 'torch': torch.__version__}
    path = os.path.join(OUT, f'{name}.safetensors')
    save_safetensors(path, tensors, meta)
    lg = tensors['eval.logits']
    worst = max(noise.items(), key=lambda kv: kv[1])
    print(f'{name}: {os.path.getsize(path)} bytes, eval logits |max| {lg.abs().max():.3f}, '
          f'train loss {tensors["train.loss"].item():.4f}, largest float32 noise {worst[0]} {worst[1]:.2g}')


def key_summary():
    out = {}
    for name in ALL_MODELS:
        with torch.device('meta'):  # shapes only: no memory, no initialisation cost
            m = make(name)
        lines = key_lines(m)
        out[name] = {
            'numClasses': m.fc.out_features,
            'params': sum(p.numel() for p in m.parameters()),
            'keys': len(lines),
            'first': lines[:3],
            'last': lines[-3:],
            'sha256': hashlib.sha256('\n'.join(lines).encode()).hexdigest(),
        }
        print(f'{name}: {out[name]["params"]:,} parameters, {len(lines)} keys')
    with open(os.path.join(OUT, 'keys.json'), 'w') as f:
        json.dump(out, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    key_summary()
    if '--keys-only' in sys.argv:
        sys.exit(0)
    for name, size in FIXTURES:
        make_fixture(name, size)
