"""Reads ONNX files that residual exported with the ONNX project's own tools (test/parity/onnx*.test.ts).

    python test/support/onnx_check.py manifest.json

manifest.json: [{"onnx": "a.onnx", "runs": [{"input": "x1.bin", "shape": [1, 3, 32, 32], "output": "y1.bin"}, ...]}, ...]
For each model: onnx.checker.check_model(full_check=True) (the checker plus strict shape inference),
then an onnxruntime CPU session runs every input (raw float32) and writes its output (raw float32).
Prints one JSON line per model: {"onnx", "ir_version", "opset", "onnx_version", "ort_version", "outputs": [shape, ...]}.
Needs numpy, onnx and onnxruntime (scripts/ci/setup-python-torch.sh makes a venv with them).
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> None:
    with open(sys.argv[1]) as f:
        manifest = json.load(f)
    for item in manifest:
        path = item["onnx"]
        onnx.checker.check_model(path, full_check=True)
        model = onnx.load(path, load_external_data=False)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        ir_version = model.ir_version
        del model
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        shapes = []
        for run in item["runs"]:
            x = np.fromfile(run["input"], dtype=np.float32).reshape(run["shape"])
            (y,) = session.run(None, {name: x})
            np.ascontiguousarray(y, dtype=np.float32).tofile(run["output"])
            shapes.append(list(y.shape))
        print(json.dumps({"onnx": path, "ir_version": ir_version, "opset": opset,
                          "onnx_version": onnx.__version__, "ort_version": ort.__version__, "outputs": shapes}), flush=True)


if __name__ == "__main__":
    main()
