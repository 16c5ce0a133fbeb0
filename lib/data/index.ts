// Data: dataset readers (IDX, CIFAR binary, image folders), streamed folders and WebDataset shards,
// shard packing, Fashion-MNIST location and download, synthetic data.
// The public names, listed (the package root exports this namespace as `data`); helpers such as the
// gzip reader, the tar writer and the run-time glue of streamed training stay inside lib/.
export { type ImageDataset, makeImageDataset, disposeDataset, type SyntheticOptions, syntheticImageDataset } from './dataset.js';
export { type IdxArray, MAX_IDX_CLASSES, parseIdx, readIdx, loadIdxImages } from './idx.js';
export {
  type CifarVariant,
  type CifarOptions,
  CIFAR10_CLASSES,
  readCifarBatches,
  loadCifar10,
  loadCifarTest,
  loadCifar100,
} from './cifar.js';
export { type ImageFolderOptions, MAX_IMAGE_PIXELS, type DecodedImage, decodeImage, listImageFolder, loadImageFolder } from './folder.js';
export {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_FILES,
  FASHION_MNIST_SHA256,
  FASHION_MNIST_URL,
  DEBIAN_FASHION_MNIST_PACKAGE,
  fashionMnistCacheDir,
  type FashionSource,
  type FoundDataset,
  findFashionMnist,
  type FashionMnist,
  loadFashionMnist,
  loadFashionMnistTest,
  verifyFashionMnist,
  type GetOptions,
  type GetResult,
  getFashionMnist,
} from './fashion.js';
export { type DataLoaderOptions, type Sampler, type LabelledImages, DataLoader } from './loader.js';
export {
  IMAGENET_MEAN,
  IMAGENET_STD,
  type StreamOptions,
  type FolderSource,
  type WebDatasetSource,
  type StreamSource,
  imageFolderSource,
  MAX_SHARD_NAMES,
  expandShards,
  MAX_STREAM_CLASSES,
  webDatasetSource,
  StreamingDataLoader,
} from './stream.js';
export { type PackOptions, type PackResult, packImageFolder } from './shards.js';
