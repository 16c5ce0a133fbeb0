// Error classes by kind. The same failure raises the same class everywhere: in the TypeScript layer,
// from the native addon (lib/addon/binding.ts registers these classes with it and it constructs them directly,
// classifying libtorch's errors by type and message; a raw addon without them throws Errors carrying the
// same `code`), and when an error is wrapped with more context (`wrapError` keeps the class and sets `cause`).
//
// Every class extends ResidualError; argument errors that are plainly about a JS value's type stay
// TypeErrors (as Node's own APIs do), and ranges stay RangeErrors, unless a kind below fits better.

/** Base class of residual's own errors. `code` is stable and machine-readable. */
export class ResidualError extends Error {
  readonly code: string = 'ERR_RESIDUAL';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Tensor shapes that do not fit the operation (sizes, ranks, broadcasting, element counts). */
export class ShapeError extends ResidualError {
  override readonly code = 'ERR_RESIDUAL_SHAPE';
}

/** A dtype the operation does not accept, or an invalid dtype conversion. */
export class DtypeError extends ResidualError {
  override readonly code = 'ERR_RESIDUAL_DTYPE';
}

/** A device that does not exist, is not available, or does not match the other operands'. */
export class DeviceError extends ResidualError {
  override readonly code = 'ERR_RESIDUAL_DEVICE';
}

/** A tensor used after `dispose()` (or after the scope that owned it ended). */
export class DisposedTensorError extends ResidualError {
  override readonly code = 'ERR_RESIDUAL_DISPOSED';
}

/** A file whose structure is invalid, truncated, or asks for more work or memory than allowed. */
export class BadFileError extends ResidualError {
  override readonly code = 'ERR_RESIDUAL_BAD_FILE';
  /** The file, when known. */
  readonly path?: string;
  constructor(message: string, options?: { cause?: unknown; path?: string }) {
    super(message, options);
    if (options?.path !== undefined) this.path = options.path;
  }
}

/** An allocation that could not be made (JS or native memory). */
export class OutOfMemoryError extends ResidualError {
  override readonly code = 'ERR_RESIDUAL_OOM';
}

/** Every error class by its `code`: how native errors and wrapped errors keep their kind. */
export const errorClassByCode: Record<string, new (message: string, options?: { cause?: unknown }) => Error> = {
  ERR_RESIDUAL: ResidualError,
  ERR_RESIDUAL_SHAPE: ShapeError,
  ERR_RESIDUAL_DTYPE: DtypeError,
  ERR_RESIDUAL_DEVICE: DeviceError,
  ERR_RESIDUAL_DISPOSED: DisposedTensorError,
  ERR_RESIDUAL_BAD_FILE: BadFileError,
  ERR_RESIDUAL_OOM: OutOfMemoryError,
};

/**
 * A new error of the same class as `err` with `message` (usually more context before the original
 * message), and `cause` set to `err`. Errors that are not Errors become ResidualErrors.
 */
export function wrapError(err: unknown, message: string): Error {
  if (!(err instanceof Error)) return new ResidualError(message, { cause: err });
  const Ctor = err.constructor as new (message: string, options?: { cause?: unknown }) => Error;
  let out: Error;
  try {
    out = new Ctor(message, { cause: err });
  } catch {
    out = new ResidualError(message, { cause: err });
  }
  if (out.cause !== err) Object.defineProperty(out, 'cause', { value: err, configurable: true, writable: true });
  if (err instanceof BadFileError && err.path !== undefined && out instanceof BadFileError && out.path === undefined) {
    Object.defineProperty(out, 'path', { value: err.path });
  }
  return out;
}
