// A small wheel shaped like PyTorch's (torch/lib, torch/include, torch/share, a .dist-info with a
// valid RECORD), made with yazl, and a libtorch manifest that pins it: fast stand-ins for the 192 MB
// wheel in the install tests. `corruptEntry` makes a wheel whose RECORD disagrees with one file.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import yazl from 'yazl';

export const FAKE_WHEEL = 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl';
export const FAKE_URL = `https://download.pytorch.org/whl/cpu/${encodeURIComponent(FAKE_WHEEL)}`;

function bytes(n: number, seed: number): Buffer {
  // Incompressible, deterministic: the wheel stays about as large as its contents.
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
  }
  return out;
}

export const FAKE_FILES: Record<string, Buffer> = {
  'torch/__init__.py': Buffer.from('# python\n'),
  'torch/version.py': Buffer.from("__version__ = '2.13.0+cpu'\ndebug = False\ncuda = None\n"),
  'torch/lib/libc10.so': bytes(300_000, 1),
  'torch/lib/libtorch_cpu.so': bytes(3_000_000, 2),
  'torch/lib/libtorch.so': bytes(8_000, 3),
  'torch/lib/libgomp.so.1': bytes(20_000, 4),
  'torch/lib/libtorch_python.so': bytes(50_000, 5),
  'torch/lib/libshm.so': bytes(4_000, 6),
  'torch/lib/libjitbackend_test.so': bytes(4_000, 7),
  'torch/lib/libshm/libshm.h': Buffer.from('// header\n'),
  'torch/include/torch/torch.h': Buffer.from('#pragma once\n'),
  'torch/include/ATen/ATen.h': Buffer.from('#pragma once\n'),
  'torch/share/cmake/Torch/TorchConfig.cmake': Buffer.from('# cmake\n'),
  'torch-2.13.0+cpu.dist-info/METADATA': Buffer.from('Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0+cpu\n'),
  'torch-2.13.0+cpu.dist-info/WHEEL': Buffer.from('Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_28_x86_64\n'),
};

const b64 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('base64url');

/** Writes the wheel to `file`; returns its size and sha256 (hex). */
export async function makeFakeWheel(
  file: string,
  { corruptEntry }: { corruptEntry?: string } = {},
): Promise<{ size: number; sha256: string }> {
  const zip = new yazl.ZipFile();
  const record: string[] = [];
  for (const [name, data] of Object.entries(FAKE_FILES)) {
    const stored =
      name === corruptEntry ? Buffer.concat([data.subarray(0, data.length - 1), Buffer.from([data[data.length - 1] ^ 1])]) : data;
    zip.addBuffer(stored, name, { compress: !name.endsWith('.so') && !name.endsWith('.so.1') });
    record.push(`${name},sha256=${b64(data)},${data.length}`);
  }
  record.push('torch-2.13.0+cpu.dist-info/RECORD,,');
  zip.addBuffer(Buffer.from(record.join('\n') + '\n'), 'torch-2.13.0+cpu.dist-info/RECORD');
  zip.end();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await new Promise<void>((resolve, reject) => zip.outputStream.pipe(fs.createWriteStream(file)).on('close', resolve).on('error', reject));
  const buf = fs.readFileSync(file);
  return { size: buf.length, sha256: crypto.createHash('sha256').update(buf).digest('hex') };
}

/** A manifest pinning one cpu wheel (at PyTorch's URL, so a mirror serves it at /whl/cpu/...). */
export function fakeManifest(pin: { size: number; sha256: string }): object {
  return {
    format: 1,
    variants: {
      cpu: {
        torch: '2.13.0',
        cuda: null,
        platform: `${process.platform}-${process.arch}`,
        files: [{ name: FAKE_WHEEL, role: 'torch', size: pin.size, sha256: pin.sha256, glibc: '2.28', url: FAKE_URL }],
      },
    },
  };
}
