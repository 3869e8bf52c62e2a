/** Stable error codes: scripts and tests match on `code`, never on message text. */
export type DpErrorCode =
  | 'ERR_CONFIG'
  | 'ERR_PRIVILEGE'
  | 'ERR_TUN'
  | 'ERR_NATIVE_LOAD'
  | 'ERR_PROTOCOL'
  | 'ERR_LISTEN'
  | 'ERR_ROUTE'
  | 'ERR_RESOLVE';

export class DpError extends Error {
  readonly code: DpErrorCode;
  /** Exit code the CLI uses when this error ends the process. */
  readonly exitCode: number;

  constructor(code: DpErrorCode, message: string, options?: { cause?: unknown; exitCode?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DpError';
    this.code = code;
    this.exitCode = options?.exitCode ?? 1;
  }
}

/** A peer broke the wire protocol; the link that carried it is closed. */
export class ProtocolError extends DpError {
  constructor(message: string) {
    super('ERR_PROTOCOL', message);
    this.name = 'ProtocolError';
  }
}

/** A sealed record that failed authentication: tampered with, or not under this key. */
export class TamperedError extends ProtocolError {
  constructor() {
    super('SEALED record failed authentication (tampered, or not this key)');
  }
}

/** A frame of another protocol version: another dp-tcp, which can be told why. */
export class VersionError extends ProtocolError {
  constructor(readonly version: number) {
    super(`unsupported protocol version ${version}`);
  }
}

/** A system error as Node and our addon build it: `code`, `errno`, `syscall`. */
export interface SystemError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
}

export function isSystemError(e: unknown): e is SystemError {
  return e instanceof Error && typeof (e as SystemError).code === 'string';
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
