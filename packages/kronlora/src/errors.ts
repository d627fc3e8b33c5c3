/**
 * Errors thrown by kronlora. Both backends report core errors as `[CODE] message`; this module
 * turns that into a `KronLoraError` with `code`, so callers see the same thing on either backend.
 */

export type KronLoraErrorCode =
  | 'ERR_INVALID_OPTION'
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_SHAPE_MISMATCH'
  | 'ERR_FACTORIZATION'
  | 'ERR_NON_FINITE'
  | 'ERR_INVALID_MODEL'
  | 'ERR_INVALID_DATA'
  | 'ERR_INVALID_STATE'
  | 'ERR_UNSUPPORTED'
  | 'ERR_IO'
  | 'ERR_WOULD_OVERWRITE'
  | 'ERR_ABORTED'
  | 'ERR_BACKEND'
  | 'ERR_INTERNAL';

export class KronLoraError extends Error {
  readonly code: KronLoraErrorCode;

  constructor(code: KronLoraErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KronLoraError';
    this.code = code;
  }
}

const CODED = /^\[(ERR_[A-Z_]+)\] ([\s\S]*)$/;

/** Convert whatever a backend threw into a `KronLoraError`. */
export function fromBackendError(error: unknown): KronLoraError {
  if (error instanceof KronLoraError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const coded = CODED.exec(message);
  if (coded) return new KronLoraError(coded[1] as KronLoraErrorCode, coded[2], { cause: error });
  if (error instanceof WebAssembly.RuntimeError) {
    return new KronLoraError(
      'ERR_INTERNAL',
      `the WASM backend aborted (${message}); this is a kronlora bug, please report it. ` +
        'Objects created on the WASM backend may be unusable now; restart the process.',
      { cause: error },
    );
  }
  return new KronLoraError('ERR_INTERNAL', `unexpected backend failure: ${message}`, { cause: error });
}

/** Run a backend call, rethrowing its failure as a `KronLoraError`. */
export function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw fromBackendError(error);
  }
}
