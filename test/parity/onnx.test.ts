// ONNX export checked by the ONNX project's own tools and by ONNX Runtime: every CIFAR-sized network of
// the registry (ResNets with option-A shortcuts, plain networks, pre-activation and wide ResNets; the big
// ones are in onnx-large.test.ts) at a small input, BatchNorm kept and folded, the opsets, a fixed batch,
// input normalisation, torchvision-style variants. For each file:
//   - onnxruntime-node (npm devDependency) gives residual's logits at batch sizes 1 and 5;
//   - Python: onnx.checker.check_model(full_check=True) accepts it and onnxruntime-python gives the same
//     logits (test/support/onnx_check.py).
// Python: RESIDUAL_TEST_PYTHON (or .cache/python-torch, or python3) with numpy, onnx and onnxruntime;
// scripts/ci/setup-python-torch.sh makes one. With RESIDUAL_TEST_PYTHON_ONNX=1 (CI) the Python checks
// must run: a missing Python is then a failure. Without it they are skipped, and say so.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createModel, createRunModel, getModelInfo, manualSeed, nn, randn, scope, tensor, type Tensor } from '../../lib/index.js';
import type { Module } from '../../lib/nn/module.js';
import { cifarResnet, resnet18 } from '../../lib/models/resnet/index.js';
import { exportOnnx, ONNX_OPSETS } from '../../lib/onnx/index.js';
import { ParitySuite, type ParityRow, calibrate, findOnnxPython, pythonRequired, runOrtNode, tolerance } from '../support/onnx.js';

const python = await findOnnxPython();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'residual-onnx-'));
const suite = new ParitySuite(dir);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Every registry network that onnx-large.test.ts does not cover, with its test input. */
const SMALL: [string, number[]][] = [
  ['resnet20', [1, 28, 28]], // Fashion-MNIST's shape
  ['resnet32', [3, 15, 13]], // odd, non-square: the option-A slice of an odd size
  ['resnet44', [3, 16, 16]],
  ['resnet56', [3, 16, 16]],
  ['resnet110', [3, 16, 16]],
  ['plain20', [3, 16, 16]],
  ['plain32', [3, 16, 16]],
  ['plain44', [3, 16, 16]],
  ['plain56', [3, 16, 16]],
  ['plain110', [3, 16, 16]],
  ['preact_basic20', [3, 16, 16]],
  ['preact_basic56', [3, 16, 16]],
  ['preact_basic110', [3, 16, 16]],
  ['wrn16_4', [3, 16, 16]],
  ['wrn16_8', [3, 16, 16]],
  ['preact164', [3, 16, 16]],
];

function build(name: string, shape: number[], seed = 1): Module {
  manualSeed(seed);
  const m = createModel(name, { inChannels: shape[0], numClasses: getModelInfo(name).family === 'imagenet' ? 100 : 10 });
  calibrate(m, shape);
  return m;
}

function expectAgree(row: ParityRow): void {
  expect(
    row.node,
    `${row.model}: onnxruntime-node vs residual (logits up to ${row.scale.toFixed(2)}, float32 noise ${row.noise.toExponential(1)})`,
  ).toBeLessThanOrEqual(tolerance(row));
}

describe('ONNX export of every CIFAR-sized registry network, run by onnxruntime-node', () => {
  for (const [name, shape] of SMALL) {
    it(`${name} at ${shape.join('x')}: the same logits at batch 1 and 5`, async () => {
      const m = build(name, shape);
      try {
        const row = await suite.check(name, m, shape, (f) => exportOnnx(m, f, { inputShape: shape }));
        expectAgree(row);
      } finally {
        m.dispose();
      }
    });
  }
});

describe('ONNX export options, run by onnxruntime-node', () => {
  it('foldBatchNorm: a CIFAR ResNet, a pre-activation ResNet (some BNs follow no conv and stay) and a bottleneck ResNet', async () => {
    for (const [name, shape] of [
      ['resnet20', [3, 16, 16]],
      ['preact_basic20', [3, 16, 16]],
      ['preact164', [3, 16, 16]],
    ] as const) {
      const m = build(name, [...shape]);
      try {
        const row = await suite.check(
          `${name}-folded`,
          m,
          [...shape],
          (f) => exportOnnx(m, f, { inputShape: [...shape], foldBatchNorm: true }),
          { fold: true },
        );
        expectAgree(row);
      } finally {
        m.dispose();
      }
    }
  });

  it('layers beyond the registry networks: conv with bias, dilation, groups and padding same; BatchNorm without affine; max/avg pools with padding; adaptive pooling to 2x2; Flatten, Dropout, Linear', async () => {
    manualSeed(4);
    const m = new nn.Sequential(
      new nn.Conv2d(3, 8, 3, { padding: 'same', dilation: 2 }),
      new nn.BatchNorm2d(8, { affine: false }),
      new nn.ReLU(),
      new nn.Conv2d(8, 8, 3, { stride: 2, padding: 1, groups: 4 }),
      new nn.MaxPool2d(3, { stride: 1, padding: 1, dilation: 1 }),
      new nn.AvgPool2d(2, { stride: 1, padding: 1, countIncludePad: false }),
      new nn.AvgPool2d(3, { stride: 2 }),
      new nn.AdaptiveAvgPool2d(2),
      new nn.Flatten(),
      new nn.Dropout(0.3),
      new nn.Linear(32, 5),
    );
    calibrate(m, [3, 17, 15]);
    try {
      expectAgree(await suite.check('layers', m, [3, 17, 15], (f) => exportOnnx(m, f, { inputShape: [3, 17, 15] })));
    } finally {
      m.dispose();
    }
  });

  it(`opsets ${ONNX_OPSETS.min} and ${ONNX_OPSETS.max} (the default is ${ONNX_OPSETS.default})`, async () => {
    const m = build('resnet20', [3, 16, 16]);
    try {
      for (const opset of [ONNX_OPSETS.min, ONNX_OPSETS.max]) {
        const row = await suite.check(`resnet20-opset${opset}`, m, [3, 16, 16], (f) =>
          exportOnnx(m, f, { inputShape: [3, 16, 16], opset }),
        );
        expect(row.opset).toBe(opset);
        expectAgree(row);
      }
    } finally {
      m.dispose();
    }
  });

  it('dynamicBatch: false fixes the batch (N = 3 here)', async () => {
    const m = build('resnet20', [3, 16, 16]);
    try {
      const row = await suite.check(
        'resnet20-batch3',
        m,
        [3, 16, 16],
        (f) => exportOnnx(m, f, { inputShape: [3, 3, 16, 16], dynamicBatch: false }),
        { batches: [3] },
      );
      expectAgree(row);
      // a batch of another size is refused by onnxruntime
      const f = path.join(dir, 'fixed.onnx');
      exportOnnx(m, f, { inputShape: [3, 3, 16, 16], dynamicBatch: false });
      const x = randn([2, 3, 16, 16]);
      await expect(runOrtNode(f, [x])).rejects.toThrow(/dimension|shape|Got: 2/i);
      x.dispose();
    } finally {
      m.dispose();
    }
  });

  it('normalize: the graph takes pixels in [0, 1] and applies (x - mean) / std per channel first', async () => {
    const shape = [3, 16, 16];
    const m = build('resnet20', shape);
    const mean = [0.49, 0.48, 0.45];
    const std = [0.25, 0.24, 0.26];
    try {
      const toInput = (x: Tensor): Tensor => scope(() => x.sub(nnTensor(mean)).div(nnTensor(std)));
      const row = await suite.check(
        'resnet20-normalize',
        m,
        shape,
        (f) => exportOnnx(m, f, { inputShape: shape, normalize: { mean, std } }),
        { toInput },
      );
      expectAgree(row);
    } finally {
      m.dispose();
    }
  });

  it('torchvision-style variants: small stem (maxpool = Identity), option-B shortcuts, a replaced head Sequential(Dropout, Linear), a model in training mode, channels-last and float64 weights', async () => {
    const variants: [string, () => Module, number[]][] = [
      ['resnet18-small-stem', () => resnet18({ stem: 'small', numClasses: 7 }), [3, 16, 16]],
      ['resnet20-optionB', () => cifarResnet(20, { shortcut: 'B' }), [3, 16, 16]],
      [
        'resnet20-new-head',
        () => {
          const m = cifarResnet(20);
          m.registerModule('fc', new nn.Sequential(new nn.Dropout(0.5), new nn.Linear(64, 4)));
          return m;
        },
        [3, 16, 16],
      ],
    ];
    for (const [name, make, shape] of variants) {
      manualSeed(3);
      const m = make();
      calibrate(m, shape);
      try {
        expectAgree(await suite.check(name, m, shape, (f) => exportOnnx(m, f, { inputShape: shape })));
      } finally {
        m.dispose();
      }
    }
    // Export writes the eval-mode graph whatever the model's mode, and leaves the mode as it was.
    const m = build('resnet20', [3, 16, 16]);
    try {
      m.train();
      const row = await suite.check('resnet20-train-mode', m, [3, 16, 16], (f) => {
        const info = exportOnnx(m, f, { inputShape: [3, 16, 16] });
        expect(m.training).toBe(true);
        m.eval(); // residual's side of the comparison: eval mode
        return info;
      });
      expectAgree(row);
      // channels-last weights (as CPU training leaves them) export the same numbers
      const cl = createRunModel(
        { model: 'resnet20', channelsLast: true },
        { classes: Array.from({ length: 10 }, String), channels: 3 },
        'cpu',
      );
      try {
        const sd = m.stateDict();
        cl.loadStateDict(sd);
        for (const t of Object.values(sd)) t.dispose();
        cl.eval();
        expect((cl as unknown as { conv1: nn.Conv2d }).conv1.weight.isContiguous('channelsLast')).toBe(true);
        expect((cl as unknown as { conv1: nn.Conv2d }).conv1.weight.isContiguous()).toBe(false);
        expectAgree(await suite.check('resnet20-channels-last', m, [3, 16, 16], (f) => exportOnnx(cl, f, { inputShape: [3, 16, 16] })));
      } finally {
        cl.dispose();
      }
      // float64 weights are written as float32
      m.double();
      const row64 = await suite.check('resnet20-float64-weights', m, [3, 16, 16], (f) => exportOnnx(m, f, { inputShape: [3, 16, 16] }), {
        toInput: (x) => x.to('float64'),
      });
      expect(row64.node).toBeLessThanOrEqual(tolerance({ ...row64, noise: 1e-6 }));
    } finally {
      m.dispose();
    }
  });
});

describe('ONNX files read by the ONNX project (Python: onnx.checker full_check, onnxruntime)', () => {
  it.runIf(python !== null || pythonRequired)(
    'onnx.checker accepts every file above and onnxruntime-python gives the same logits at batch 1 and 5',
    async () => {
      if (!python)
        throw new Error(
          'RESIDUAL_TEST_PYTHON_ONNX=1 but no Python with numpy, onnx and onnxruntime was found: run scripts/ci/setup-python-torch.sh (or set RESIDUAL_TEST_PYTHON)',
        );
      const results = await suite.finishPython(python);
      for (const r of results) {
        expect(r.ir_version).toBe(8);
      }
      for (const row of suite.rows) {
        expect(
          row.python,
          `${row.model}: onnxruntime-python vs residual (logits up to ${row.scale.toFixed(2)}, float32 noise ${row.noise.toExponential(1)})`,
        ).toBeLessThanOrEqual(tolerance(row));
      }
      console.log(
        `onnx ${results[0]?.onnx_version}, onnxruntime ${results[0]?.ort_version} (Python), onnxruntime-node ${(await import('onnxruntime-node')).env.versions.common}\n${suite.table()}`,
      );
    },
  );
  it.runIf(python === null && !pythonRequired)(
    'skipped: no Python with onnx and onnxruntime (set RESIDUAL_TEST_PYTHON or run scripts/ci/setup-python-torch.sh)',
    () => {
      console.warn(
        'onnx: no Python with numpy, onnx and onnxruntime; onnx.checker and onnxruntime-python did not run (RESIDUAL_TEST_PYTHON_ONNX=1 makes this a failure)',
      );
      suite.dropPython();
      console.log(suite.table());
    },
  );
});

/** [1, C, 1, 1], for broadcasting over [N, C, H, W]. */
function nnTensor(v: number[]): Tensor {
  return scope(() => tensor(v).reshape([1, v.length, 1, 1]));
}
