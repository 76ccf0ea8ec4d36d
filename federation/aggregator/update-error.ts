import * as grpc from '@grpc/grpc-js';

/**
 * UpdateError is a reason to refuse a call, with the gRPC status the caller receives. Its
 * message says what was wrong, the value seen and the value expected.
 */
export class UpdateError extends Error {
  override readonly name = 'UpdateError';

  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }

  /** asServiceError shapes the error the way grpc-js sends a status to the caller. */
  asServiceError(): Partial<grpc.StatusObject> & Error {
    return Object.assign(new Error(this.message), { code: this.code, details: this.message });
  }
}

/** invalid is the error for an update whose content is wrong. */
export function invalid(message: string): UpdateError {
  return new UpdateError(grpc.status.INVALID_ARGUMENT, message);
}

/** precondition is the error for a call that comes at the wrong time (wrong round, closed). */
export function precondition(message: string): UpdateError {
  return new UpdateError(grpc.status.FAILED_PRECONDITION, message);
}
