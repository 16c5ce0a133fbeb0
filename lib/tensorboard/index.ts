// TensorBoard event files: SummaryWriter (PyTorch's, in camelCase), and reading them back.
export { SummaryWriter, isEventFileName, FILE_VERSION, DEFAULT_HISTOGRAM_BINS, type SummaryWriterOptions, type AddOptions } from './writer.js';
export { readEventFile, listEventFiles, truncateEventFiles, removeEventFiles, type EventFileContents } from './reader.js';
export type { TbEvent, SummaryValue, HistogramProto } from './proto.js';
export type { DataFormats } from './image.js';
