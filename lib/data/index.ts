// Data: dataset readers (IDX, CIFAR binary, image folders), streamed folders and WebDataset shards,
// shard packing, Fashion-MNIST location and download,
// synthetic data.
export * from './dataset.js';
export * from './idx.js';
export * from './cifar.js';
export * from './folder.js';
export * from './fashion.js';
export * from './loader.js';
export * from './stream.js';
export * from './shards.js';
