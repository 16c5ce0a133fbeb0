#!/usr/bin/env python3
"""Writes the small torch.save checkpoints used by test/torch-checkpoint.test.ts into
test/fixtures/torch/, each with a JSON side file of the expected tensors:
  {name: {"dtype": "float32", "shape": [...], "data": [flat values, row-major]}}.
Float values are written as the exact float64 value of each element (float16/bfloat16/float32 widen
exactly), int64 values beyond 2^53 as strings.

Run: python3 scripts/make-torch-checkpoint-fixtures.py   (needs torch; the tests do not)
"""
import io
import json
import os
import struct
import zipfile
import zlib
from collections import OrderedDict

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'torch')
DTYPES = {
    torch.float32: 'float32', torch.float64: 'float64', torch.float16: 'float16', torch.bfloat16: 'bfloat16',
    torch.int64: 'int64', torch.int32: 'int32', torch.int16: 'int16', torch.int8: 'int8', torch.uint8: 'uint8',
    torch.bool: 'bool',
}


def expected(flat):
    """{name: tensor} -> the JSON side-file object."""
    out = {}
    for k, t in flat.items():
        requires_grad = t.requires_grad
        t = t.detach()
        if t.dtype == torch.bool:
            data = [bool(x) for x in t.flatten().tolist()]
        elif t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            data = t.double().flatten().tolist()
        else:
            data = [x if abs(x) <= 2**53 else str(x) for x in t.flatten().tolist()]
        out[k] = {'dtype': DTYPES[t.dtype], 'shape': list(t.shape), 'data': data, 'requiresGrad': requires_grad}
    return out


def write_json(name, obj):
    with open(os.path.join(OUT, name), 'w') as f:
        json.dump(obj, f, indent=None, separators=(',', ':'))
        f.write('\n')


def flatten(obj, prefix=''):
    """Mirrors loadTorchCheckpoint: nested dicts / lists joined with '.', non-tensors dropped."""
    out = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else []
    for k, v in items:
        key = f'{prefix}.{k}' if prefix else str(k)
        if isinstance(v, torch.Tensor):
            out[key] = v
        elif isinstance(v, (dict, list, tuple)):
            out.update(flatten(v, key))
    return out


def save(name, obj):
    path = os.path.join(OUT, name)
    torch.save(obj, path)
    # Check torch reads it back (weights_only: the same restricted set of globals we allow).
    back = torch.load(path, weights_only=True)
    a, b = flatten(obj), flatten(back)
    assert a.keys() == b.keys(), name
    for k in a:
        assert torch.equal(a[k].detach(), b[k].detach()), (name, k)
    return path


def rewrite_zip(src, dst, transform=lambda name, data: data, compression=zipfile.ZIP_STORED):
    """Copies the archive entry by entry, optionally changing entries or the compression."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', compression) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, transform(info.filename, zin.read(info.filename)))


def write_zip64(dst, entries):
    """A STORED zip in which every size and offset is given only in zip64 fields (the 32-bit fields hold
    0xFFFFFFFF), the way large torch.save archives look, but small."""
    out = io.BytesIO()
    central = []
    for name, data in entries:
        offset = out.tell()
        crc = zlib.crc32(data)
        n = name.encode()
        local_extra = struct.pack('<HHQQ', 1, 16, len(data), len(data))
        out.write(struct.pack('<IHHHHHIIIHH', 0x04034b50, 45, 0, 0, 0, 0, crc, 0xffffffff, 0xffffffff, len(n), len(local_extra)))
        out.write(n + local_extra + data)
        extra = struct.pack('<HHQQQ', 1, 24, len(data), len(data), offset)
        central.append(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 45, 45, 0, 0, 0, 0, crc, 0xffffffff, 0xffffffff,
                                   len(n), len(extra), 0, 0, 0, 0, 0xffffffff) + n + extra)
    cd_offset = out.tell()
    for c in central:
        out.write(c)
    cd_size = out.tell() - cd_offset
    z64 = out.tell()
    out.write(struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 45, 45, 0, 0, len(entries), len(entries), cd_size, cd_offset))
    out.write(struct.pack('<IIQI', 0x07064b50, 0, z64, 1))
    out.write(struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0))
    with open(dst, 'wb') as f:
        f.write(out.getvalue())


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    # 1. A module state dict: OrderedDict with _metadata, float32 weights, int64 num_batches_tracked.
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    model.train()
    model(torch.randn(4, 1, 4, 4))  # moves the running stats and num_batches_tracked off their defaults
    sd = model.state_dict()
    assert isinstance(sd, OrderedDict) and hasattr(sd, '_metadata')
    save('model_state.pt', sd)
    write_json('model_state.json', expected(sd))

    # 1b. The same with pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE opcodes).
    torch.save(sd, os.path.join(OUT, 'model_state_p4.pt'), pickle_protocol=4)
    # (torch's own weights_only reader rejects FRAME, so check with the full one: we wrote this file.)
    back = torch.load(os.path.join(OUT, 'model_state_p4.pt'), weights_only=False)
    assert all(torch.equal(sd[k], back[k]) for k in sd)

    # 1c. Plain Python values (no tensors) under protocols 2 and 5; the test spells out the same object.
    shared = [1, 2]
    plain = {
        'ints': [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31 - 1, 2**31, 2**63, -(2**63) - 1, 2**53 + 1],
        'floats': [0.5, -1e300, 1.5e-310, float('inf')],
        'strs': ['', 'h\u00e9llo \u2603', 'x' * 300],
        'bytes': b'\x00\x01\xff',
        'tuples': [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        'set': {7}, 'frozen': frozenset({8}), 'none': None, 'bools': [True, False],
        'shared': [shared, shared], 'intkeys': {1: 'a', -2: 'b'},
    }
    for proto in (2, 5):
        torch.save(plain, os.path.join(OUT, f'plain_p{proto}.pt'), pickle_protocol=proto)
        assert torch.load(os.path.join(OUT, f'plain_p{proto}.pt'), weights_only=False) == plain

    # 2. A plain dict of many dtypes, views, non-contiguous tensors and non-tensor values.
    base = torch.arange(12, dtype=torch.float32) * 0.5
    mat = torch.arange(6, dtype=torch.float64).reshape(2, 3) + 0.25
    mixed = {
        'half': torch.tensor([1.5, -2.25, 65504.0, 6.1e-5], dtype=torch.float16),
        'bf16': torch.tensor([1.0, -3.140625, 1e30, 0.0078125], dtype=torch.bfloat16),
        'long': torch.tensor([0, -3, 2**40 + 7, -(2**62) - 5], dtype=torch.int64),
        'int32': torch.tensor([[-(2**31), 7], [2**31 - 1, 0]], dtype=torch.int32),
        'int16': torch.tensor([-32768, 12, 32767], dtype=torch.int16),
        'int8': torch.tensor([-128, 5, 127], dtype=torch.int8),
        'uint8': torch.tensor([0, 200, 255], dtype=torch.uint8),
        'double': mat,
        'flag': torch.tensor([True, False, True, True]),
        'scalar': torch.tensor(3.75),
        'empty': torch.zeros(0, 3),
        'transposed': mat.t(),  # non-contiguous: size [3, 2], stride [1, 3]
        'expanded': torch.tensor([1.0, 2.0, 3.0]).expand(2, 3),  # stride [0, 1]
        'view_a': base[2:6],  # offset 2 into the shared storage
        'view_b': base.view(3, 4)[1:],  # offset 4, shape [2, 4], same storage
        'column': base.view(3, 4)[:, 1],  # offset 1, stride [4]
        'param': torch.nn.Parameter(torch.tensor([0.5, -0.5])),  # _rebuild_parameter, requires_grad
        'nested': {'inner': {'w': torch.tensor([[1, 2], [3, 4]], dtype=torch.int64)}, 'note': 'skipped'},
        'list': [torch.tensor([9.0]), 5, torch.tensor([True])],
        'epoch': 3, 'lr': 0.1, 'name': 'mixed', 'none': None, 'big': 2**70, 'neg': -(2**40),
        'pair': (1, 2.5), 'dtype': torch.float16, 'set': {1, 2},
    }
    path = save('mixed.pt', mixed)
    with zipfile.ZipFile(path) as z:
        assert len([n for n in z.namelist() if '/data/' in n and not n.endswith('serialization_id')]) < 20
    flat = flatten(mixed)
    write_json('mixed.json', expected(flat))

    # 3. The same archive with DEFLATE-compressed entries (torch writes STORED; other tools may not).
    rewrite_zip(os.path.join(OUT, 'mixed.pt'), os.path.join(OUT, 'mixed_deflate.pt'), compression=zipfile.ZIP_DEFLATED)

    # 4. The model state dict in a big-endian archive (byteorder 'big', every element byte-swapped);
    # torch.load honours the byteorder record, and so must we.
    sizes = {}
    with zipfile.ZipFile(os.path.join(OUT, 'model_state.pt')) as z:
        pkl = z.read('model_state/data.pkl')
    # Element sizes per storage key, from the tensors in the state dict (each has its own storage).
    for i, (k, t) in enumerate(sd.items()):
        sizes[str(i)] = t.element_size()

    def to_big(name, data):
        if name.endswith('/byteorder'):
            return b'big'
        key = name.split('/data/')[-1] if '/data/' in name else None
        if key in sizes and sizes[key] > 1:
            n = sizes[key]
            return b''.join(data[i:i + n][::-1] for i in range(0, len(data), n))
        return data
    big = os.path.join(OUT, 'model_state_bigendian.pt')
    rewrite_zip(os.path.join(OUT, 'model_state.pt'), big, to_big)
    back = torch.load(big, weights_only=True)
    for k, t in sd.items():
        assert torch.equal(t, back[k]), ('bigendian', k)

    # 5. A small dict in a zip whose sizes and offsets are all in zip64 extra fields.
    small = {'w': torch.tensor([1.0, 2.0, 3.0]), 'n': torch.tensor([7], dtype=torch.int64)}
    tmp = os.path.join(OUT, 'small.tmp')
    torch.save(small, tmp)
    with zipfile.ZipFile(tmp) as z:
        entries = [(i.filename.replace('small.tmp/', 'zip64/').replace('small/', 'zip64/'), z.read(i.filename)) for i in z.infolist()]
    os.remove(tmp)
    z64 = os.path.join(OUT, 'zip64.pt')
    write_zip64(z64, entries)
    back = torch.load(z64, weights_only=True)
    assert all(torch.equal(small[k], back[k]) for k in small)
    write_json('small.json', expected(small))

    # 5b. The same dict as if saved from a GPU: storage locations 'cuda:0' (loaded onto the CPU anyway).
    def to_cuda(name, data):
        cpu, cuda = b'cpu', b'cuda:0'
        return data.replace(b'X' + struct.pack('<I', len(cpu)) + cpu, b'X' + struct.pack('<I', len(cuda)) + cuda) if name.endswith('data.pkl') else data
    torch.save(small, os.path.join(OUT, 'small.pt'))
    rewrite_zip(os.path.join(OUT, 'small.pt'), os.path.join(OUT, 'cuda_location.pt'), to_cuda)
    os.remove(os.path.join(OUT, 'small.pt'))
    with zipfile.ZipFile(os.path.join(OUT, 'cuda_location.pt')) as z:
        assert b'cuda:0' in z.read('small/data.pkl')
    back = torch.load(os.path.join(OUT, 'cuda_location.pt'), map_location='cpu', weights_only=True)
    assert all(torch.equal(small[k], back[k]) for k in small)

    # 6. Malicious: a pickle whose only content is os.system('...'), and a state dict that hides a call
    # to builtins.eval after a real tensor. Built by hand; nothing here is ever unpickled by Python.
    marker = 'residual-torch-fixture-pwned'
    evil = (b'\x80\x02' + b'cos\nsystem\n' + b'X' + struct.pack('<I', len('touch ' + marker)) + ('touch ' + marker).encode()
            + b'\x85R.')
    with zipfile.ZipFile(os.path.join(OUT, 'malicious.pt'), 'w') as z:
        z.writestr('malicious/data.pkl', evil)
        z.writestr('malicious/version', '3\n')
    # {'w': <tensor from storage '0'>, 'x': eval('...')}
    rebuild = (b'ctorch._utils\n_rebuild_tensor_v2\n(' + b'(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ'
               + b'K\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR')
    code = "__import__('os').system('touch " + marker + "')"
    evil2 = (b'\x80\x02}(X\x01\x00\x00\x00w' + rebuild + b'X\x01\x00\x00\x00x' + b'c__builtin__\neval\n'
             + b'X' + struct.pack('<I', len(code)) + code.encode() + b'\x85Ru.')
    with zipfile.ZipFile(os.path.join(OUT, 'malicious_nested.pt'), 'w') as z:
        z.writestr('malicious_nested/data.pkl', evil2)
        z.writestr('malicious_nested/data/0', struct.pack('<f', 1.0))
    print('wrote', sorted(os.listdir(OUT)))


if __name__ == '__main__':
    main()
