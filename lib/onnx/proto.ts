// The ONNX protobuf messages, encoded and decoded by protobufjs with the ONNX schema compiled by the
// `onnx-proto` package (onnx.proto3 of ONNX v1.10.2, IR version 8; MIT, over protobufjs 6). Nothing here
// writes the wire format by hand: this file only builds the plain message objects the schema describes.
import { createRequire } from 'node:module';
import type { onnx as OnnxNs } from 'onnx-proto';

// onnx-proto is a CommonJS module whose export is protobufjs's root with an `onnx` namespace.
const require = createRequire(import.meta.url);
const { onnx } = require('onnx-proto') as { onnx: typeof OnnxNs };

export { onnx };
export type ModelProto = OnnxNs.IModelProto;
export type NodeProto = OnnxNs.INodeProto;
export type TensorProto = OnnxNs.ITensorProto;
export type AttributeProto = OnnxNs.IAttributeProto;
export type ValueInfoProto = OnnxNs.IValueInfoProto;

/** The IR version of the schema above (onnx.Version.IR_VERSION): the one every exported file declares. */
export const IR_VERSION: number = onnx.Version.IR_VERSION;

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: onnx.TensorProto.DataType.FLOAT, INT64: onnx.TensorProto.DataType.INT64 } as const;

/** An attribute value: an int, a float, a string or a list of ints (all the exporter needs). */
export type AttrValue = number | string | number[] | { float: number };

/** An AttributeProto with its type field set, as the ONNX checker requires. */
export function attribute(name: string, v: AttrValue): AttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (Array.isArray(v)) {
    if (!v.every((x) => Number.isSafeInteger(x)))
      throw new RangeError(`ONNX attribute ${name}: expected integers, got ${JSON.stringify(v)}`);
    return { name, type: T.INTS, ints: v };
  }
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new RangeError(`ONNX attribute ${name}: expected an integer, got ${v}`);
    return { name, type: T.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  return { name, type: T.FLOAT, f: v.float };
}

/** A float tensor type with a shape whose dimensions are numbers or symbolic names. */
export function tensorValueInfo(name: string, shape: readonly (number | string)[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: DataType.FLOAT,
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** Serializes a model. */
export function encodeModel(m: ModelProto): Uint8Array {
  const err = onnx.ModelProto.verify(m);
  if (err) throw new Error(`ONNX export: the model message does not fit the schema (${err})`);
  return onnx.ModelProto.encode(m).finish();
}

/** Parses a serialized model (tests, and the CLI's summary of what it wrote). */
export function decodeModel(bytes: Uint8Array): OnnxNs.ModelProto {
  return onnx.ModelProto.decode(bytes);
}
