/**
 * Why a firmware update did not happen. The codes are the contract's (docs/mqtt.md,
 * "firmware.update"): a fleet counts and alerts on them, so they are stable; the message says
 * what was wrong in words.
 */
export type UpdateErrorCode =
  | 'ERR_UPDATE_MANIFEST'
  | 'ERR_UPDATE_SIGNATURE'
  | 'ERR_UPDATE_SPACE'
  | 'ERR_UPDATE_DOWNLOAD'
  | 'ERR_UPDATE_SAME_VERSION'
  | 'ERR_UPDATE_DOWNGRADE'
  | 'ERR_UPDATE_VERSION_MISMATCH'
  | 'ERR_UPDATE_INSTALL'
  | 'ERR_UPDATE_REBOOT'
  | 'ERR_UPDATE_ROLLED_BACK'
  | 'ERR_UPDATE_INTERRUPTED'
  | 'ERR_UPDATE_BUSY'
  | 'ERR_UPDATE_UNSUPPORTED'
  | 'ERR_UPDATE_ABORTED';

export class UpdateError extends Error {
  readonly code: UpdateErrorCode;
  /** Worth another attempt after a pause (the network or the server may recover). */
  readonly retryable: boolean;

  constructor(code: UpdateErrorCode, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = 'UpdateError';
    this.code = code;
    this.retryable = options.retryable ?? false;
  }

  toJSON(): { code: UpdateErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Any failure as an UpdateError: a bug or an unexpected I/O error keeps its text under `fallback`. */
export function updateErrorOf(error: unknown, fallback: UpdateErrorCode): UpdateError {
  if (error instanceof UpdateError) return error;
  return new UpdateError(fallback, (error as Error)?.message ?? String(error), { cause: error });
}
