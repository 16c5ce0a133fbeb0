// Runs ONNX files in onnxruntime-node in a process of its own (session creation is synchronous and can
// take a minute for a 1000-layer graph on a loaded machine: the test worker's event loop must not wait).
//   node test/support/ort_node_run.mjs manifest.json
// manifest.json: [{"onnx": "a.onnx", "runs": [{"input": "x.bin", "shape": [1, 3, 32, 32], "output": "y.bin"}]}]
// Each output is written as raw float32; one JSON line per file: {"onnx", "outputs": [dims, ...], "version"}.
import fs from 'node:fs';
import ort from 'onnxruntime-node';

const manifest = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
for (const item of manifest) {
  const session = await ort.InferenceSession.create(item.onnx, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
  const outputs = [];
  for (const run of item.runs) {
    const b = fs.readFileSync(run.input);
    const x = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    const r = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, run.shape) });
    const y = r[session.outputNames[0]];
    fs.writeFileSync(run.output, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
    outputs.push([...y.dims]);
  }
  await session.release();
  console.log(JSON.stringify({ onnx: item.onnx, outputs, version: ort.env.versions.common }));
}
