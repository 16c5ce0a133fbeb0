// Loads the native addon once per thread (it is context-aware: main thread and workers each get
// their own instance). The binary is chosen by lib/loader.ts (prebuilt or locally built).
import { loadAddon } from './loader.js';

/**
 * A native tensor reference: the id of a slot in the addon's handle table (a number: index and
 * generation), so creating a tensor allocates no V8 object besides the Tensor itself.
 */
export type NativeHandle = number & { readonly __nativeTensor: unique symbol };

// The binding is a flat table of functions (native/ops.cpp and friends); lib/ wraps each one in a
// typed PyTorch-style API. Arguments are positional, exactly as declared in the C++ table.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type NativeFn = (...args: any[]) => any;
export const native: Record<string, NativeFn> = loadAddon();
