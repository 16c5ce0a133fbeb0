// Loads the native addon once per thread (it is context-aware: main thread and workers each get
// their own instance). The binary is chosen by lib/addon/load.ts (prebuilt or locally built).
import { constants as bufferConstants } from 'node:buffer';
import { BadFileError, DeviceError, DisposedTensorError, DtypeError, OutOfMemoryError, ResidualError, ShapeError } from '../core/errors.js';
import { buildFromSourceCommand, loadAddon } from './load.js';
import type { NativeBinding } from './binding.generated.js';
import type { Handle } from './native-types.js';

export type { NativeBinding } from './binding.generated.js';
export type * from './native-types.js';

/**
 * A native tensor reference: the id of a slot in the addon's handle table (a number: the thread's
 * tag, a generation and an index), so creating a tensor allocates no V8 object besides the Tensor.
 */
export type NativeHandle = Handle;

// The binding is a flat table of functions (native/ops.cpp and friends), declared with their
// signatures in binding.generated.ts (generated from the C++ sources); lib/ wraps each one in a
// PyTorch-style API. Arguments are positional, exactly as declared in the C++ table.
export const native: NativeBinding = loadAddon() as unknown as NativeBinding;

// Native errors are created directly as residual's error classes (no JS wrapper per call), and
// ArrayBuffers handed to JS are checked against the largest one this Node allows.
if (typeof native.configure !== 'function' || typeof native.dtypeCodes !== 'object') {
  throw new Error(
    `residual: the native addon is older than this library (it lacks configure/dtypeCodes): rebuild it with: ${buildFromSourceCommand()}`,
  );
}
native.configure({
  errorClasses: {
    generic: ResidualError,
    shape: ShapeError,
    dtype: DtypeError,
    device: DeviceError,
    disposed: DisposedTensorError,
    oom: OutOfMemoryError,
    badFile: BadFileError,
  },
  maxArrayBufferBytes: bufferConstants.MAX_LENGTH,
});
