// ONNX export: exportOnnx(model, path, { inputShape }) writes a network's eval-mode graph for ONNX Runtime.
export { exportOnnx, toOnnx, ONNX_OPSETS, ONNX_EXPORTABLE, type ExportOnnxOptions, type OnnxExportInfo } from './export.js';
export { decodeModel as decodeOnnx } from './proto.js';
