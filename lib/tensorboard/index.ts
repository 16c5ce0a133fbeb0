// TensorBoard event files: SummaryWriter (PyTorch's, in camelCase), and reading them back.
export { SummaryWriter, type SummaryWriterOptions, type AddOptions } from './writer.js';
export { readEventFile, listEventFiles, truncateEventFiles, type EventFileContents } from './reader.js';
export type { TbEvent, SummaryValue, HistogramProto } from './proto.js';
export type { DataFormats } from './image.js';
