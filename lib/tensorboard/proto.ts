// The part of TensorBoard's event schema that residual writes and reads back: Event, SessionLog, Summary
// (with its Image and Value), SummaryMetadata, HistogramProto and the TensorProto/TensorShapeProto of a
// text summary. No maintained npm package ships these protos, so the subset is written here from the
// public schema (tensorboard/compat/proto/{event,summary,histogram,tensor,tensor_shape,types}.proto,
// package `tensorboard`), with the same message names and field numbers; protobufjs parses it and does
// all of the encoding and decoding. Fields residual never writes are left out (a decoder skips unknown
// fields). test/e2e/tensorboard.test.ts proves the result with TensorBoard's own reader.
import protobuf from 'protobufjs';

export const TENSORBOARD_PROTO = `
syntax = "proto3";
package tensorboard;

message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    Summary summary = 5;
    SessionLog session_log = 7;
  }
}

message SessionLog {
  enum SessionStatus {
    STATUS_UNSPECIFIED = 0;
    START = 1;
    STOP = 2;
    CHECKPOINT = 3;
  }
  SessionStatus status = 1;
  string checkpoint_path = 2;
  string msg = 3;
}

enum DataClass {
  DATA_CLASS_UNKNOWN = 0;
  DATA_CLASS_SCALAR = 1;
  DATA_CLASS_TENSOR = 2;
  DATA_CLASS_BLOB_SEQUENCE = 3;
}

message SummaryMetadata {
  message PluginData {
    string plugin_name = 1;
    bytes content = 2;
  }
  PluginData plugin_data = 1;
  string display_name = 2;
  string summary_description = 3;
  DataClass data_class = 4;
}

message Summary {
  message Image {
    int32 height = 1;
    int32 width = 2;
    int32 colorspace = 3;
    bytes encoded_image_string = 4;
  }
  message Value {
    string node_name = 7;
    string tag = 1;
    SummaryMetadata metadata = 9;
    oneof value {
      float simple_value = 2;
      Image image = 4;
      HistogramProto histo = 5;
      TensorProto tensor = 8;
    }
  }
  repeated Value value = 1;
}

message HistogramProto {
  double min = 1;
  double max = 2;
  double num = 3;
  double sum = 4;
  double sum_squares = 5;
  repeated double bucket_limit = 6 [packed = true];
  repeated double bucket = 7 [packed = true];
}

enum DataType {
  DT_INVALID = 0;
  DT_FLOAT = 1;
  DT_DOUBLE = 2;
  DT_STRING = 7;
}

message TensorShapeProto {
  message Dim {
    int64 size = 1;
    string name = 2;
  }
  repeated Dim dim = 2;
  bool unknown_rank = 3;
}

message TensorProto {
  DataType dtype = 1;
  TensorShapeProto tensor_shape = 2;
  int32 version_number = 3;
  bytes tensor_content = 4;
  repeated float float_val = 5 [packed = true];
  repeated double double_val = 6 [packed = true];
  repeated bytes string_val = 8;
}
`;

const root = protobuf.parse(TENSORBOARD_PROTO, { keepCase: true }).root;

/** The Event message type (protobufjs reflection: encode/decode/verify). */
export const EventType = root.lookupType('tensorboard.Event');
/** SessionLog.SessionStatus values. */
export const SessionStatus = { STATUS_UNSPECIFIED: 0, START: 1, STOP: 2, CHECKPOINT: 3 } as const;
/** DataClass values (SummaryMetadata.data_class). */
export const DataClass = { UNKNOWN: 0, SCALAR: 1, TENSOR: 2, BLOB_SEQUENCE: 3 } as const;
/** DataType values used here (TensorProto.dtype). */
export const DataType = { DT_FLOAT: 1, DT_DOUBLE: 2, DT_STRING: 7 } as const;

/** HistogramProto's fields (buckets as TensorBoard reads them: bucket i counts values in (bucket_limit[i-1], bucket_limit[i]]). */
export interface HistogramProto {
  min: number;
  max: number;
  num: number;
  sum: number;
  sum_squares: number;
  bucket_limit: number[];
  bucket: number[];
}

export interface SummaryValue {
  tag: string;
  metadata?: {
    plugin_data?: { plugin_name: string; content?: Uint8Array };
    display_name?: string;
    summary_description?: string;
    data_class?: number;
  };
  simple_value?: number;
  image?: { height: number; width: number; colorspace: number; encoded_image_string: Uint8Array };
  histo?: HistogramProto;
  tensor?: {
    dtype: number;
    tensor_shape?: { dim: { size: number }[] };
    string_val?: Uint8Array[];
    float_val?: number[];
    double_val?: number[];
  };
}

/** An Event as residual writes and reads it (keepCase field names, int64 step as a number). */
export interface TbEvent {
  wall_time: number;
  step: number;
  file_version?: string;
  summary?: { value: SummaryValue[] };
  session_log?: { status: number; checkpoint_path?: string; msg?: string };
}

/** Encodes an Event. */
export function encodeEvent(ev: TbEvent): Uint8Array {
  return EventType.encode(EventType.fromObject(ev)).finish();
}

/** Decodes an Event (int64 steps as numbers; throws on bytes that are not an Event). */
export function decodeEvent(bytes: Uint8Array): TbEvent {
  const m = EventType.decode(bytes);
  const ev = EventType.toObject(m, { longs: Number, defaults: false, oneofs: false }) as TbEvent;
  ev.wall_time ??= 0;
  ev.step ??= 0;
  return ev;
}
