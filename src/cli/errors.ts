// Errors of the CLI and the one mapping from any error to an exit code and a
// message. Commands throw; main.ts prints `darefs: COMMAND: message` and exits
// with exitCodeFor(err). Expected errors never print a stack trace
// (DAREFS_DEBUG=1 prints it for every error).

import {
  AuthenticationError,
  DareError,
  DataAfterFinalError,
  InvalidLengthError,
  InvalidPayloadSizeError,
  IrregularStreamError,
  LinkTargetTooLongError,
  NonceMismatchError,
  SealedLinkError,
  SequenceMismatchError,
  ShortPrefixError,
  TruncatedStreamError,
  UnsupportedCipherError,
  UnsupportedVersionError,
} from '../dare';
import { MountpointError } from '../fuse/mountpoint';
import { FuseMountError } from '../fuse/native';
import { KeyError, WrongPasswordError } from '../keys';
import { StoreError } from '../store/errors';
import { ExitCode } from './exit-codes';

/** An expected failure with its exit code; the message is shown as is. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The command line is wrong. `command` makes the message point at that command's --help. */
export class UsageError extends CliError {
  constructor(message: string, readonly command?: string) {
    super(message, ExitCode.USAGE);
  }
}

/** Ctrl-C at a prompt, or SIGINT/SIGTERM during a run. */
export class InterruptedError extends CliError {
  constructor(signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP' = 'SIGINT') {
    super(signal === 'SIGINT' ? 'interrupted' : `terminated by ${signal}`, signal === 'SIGTERM' ? ExitCode.TERMINATED : ExitCode.INTERRUPTED);
  }
}

/** A node errno error (ENOENT, EACCES, ...), as thrown by node:fs and friends. */
export interface ErrnoError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

export function isErrno(err: unknown): err is ErrnoError {
  if (!(err instanceof Error) || err instanceof KeyError) return false;
  const e = err as Partial<ErrnoError>;
  return typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code) && (typeof e.errno === 'number' || typeof e.syscall === 'string');
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  EEXIST: 'already exists',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EIO: 'input/output error',
  EPIPE: 'broken pipe (the reader went away)',
  ELOOP: 'too many symbolic links',
  ENAMETOOLONG: 'file name too long',
  EMFILE: 'too many open files',
  EBUSY: 'device or resource busy',
  ENXIO: 'no such device or address',
};

/** "no such file or directory (ENOENT)" */
export function describeErrno(err: unknown): string {
  if (!isErrno(err)) return err instanceof Error ? err.message : String(err);
  const text = ERRNO_TEXT[err.code];
  return text === undefined ? err.code : `${text} (${err.code})`;
}

/** Wraps a file-system error so the message names the path and the action: exit code 1. */
export function ioError(err: unknown, action: string, file: string): CliError {
  if (err instanceof CliError) return err;
  return new CliError(`${action} ${file}: ${describeErrno(err)}`, ExitCode.ERROR, { cause: err });
}

// InvalidPayloadSizeErrors that the CLI found to come from a truncated stream
// (a package shorter than its header says, at the end of the input).
const truncations = new WeakSet<Error>();

/** Records that this InvalidPayloadSizeError is a truncation, not a corruption. */
export function markTruncated(err: Error): void {
  truncations.add(err);
}

function isTruncation(err: InvalidPayloadSizeError): boolean {
  return truncations.has(err) || err.detail.startsWith('truncated');
}

/** The exit code for any error. The single place where errors map to codes. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CliError) return err.exitCode;
  if (err instanceof DareError) {
    if (err instanceof ShortPrefixError) return ExitCode.NOT_DARE;
    if (err instanceof AuthenticationError) return err.packageIndex === 0 ? ExitCode.WRONG_KEY : ExitCode.CORRUPTED;
    if (err instanceof UnsupportedVersionError || err instanceof UnsupportedCipherError) {
      return err.packageIndex === 0 ? ExitCode.NOT_DARE : ExitCode.CORRUPTED;
    }
    if (err instanceof TruncatedStreamError || err instanceof InvalidLengthError) return ExitCode.TRUNCATED;
    if (err instanceof InvalidPayloadSizeError) return isTruncation(err) ? ExitCode.TRUNCATED : ExitCode.CORRUPTED;
    if (
      err instanceof SequenceMismatchError ||
      err instanceof NonceMismatchError ||
      err instanceof DataAfterFinalError ||
      err instanceof IrregularStreamError
    ) {
      return ExitCode.CORRUPTED;
    }
    return ExitCode.CORRUPTED;
  }
  // A symlink target that is not sealed or does not authenticate: modified, as a bad package.
  if (err instanceof SealedLinkError) return ExitCode.CORRUPTED;
  if (err instanceof KeyError) {
    switch (err.code) {
      case 'EBADPASS':
        return ExitCode.WRONG_KEY;
      case 'EKEYFILE':
        // Unreadable key file: an I/O error; malformed one: an unusable key.
        return isErrno(err.cause) ? ExitCode.ERROR : ExitCode.WRONG_KEY;
      case 'ECONFIG':
      case 'ECONFIGEXISTS':
        return ExitCode.VOLUME;
      case 'ESECRET':
        return ExitCode.USAGE;
      case 'EDISPOSED':
        return ExitCode.ERROR;
    }
  }
  if (err instanceof Error && err.name === 'AbortError') return ExitCode.INTERRUPTED;
  return ExitCode.ERROR;
}

/** Whether an error is one the CLI expects (no stack trace unless DAREFS_DEBUG=1). */
export function isExpected(err: unknown): boolean {
  return (
    err instanceof CliError ||
    err instanceof DareError ||
    err instanceof SealedLinkError ||
    err instanceof LinkTargetTooLongError ||
    err instanceof KeyError ||
    err instanceof MountpointError ||
    err instanceof FuseMountError ||
    err instanceof StoreError ||
    isErrno(err)
  );
}

/** The user-facing message (without the `darefs: COMMAND: ` prefix). */
export function messageFor(err: unknown): string {
  if (err instanceof AuthenticationError && err.packageIndex === 0) {
    const file = err.file ?? 'the file';
    return `authentication failed in package 0 of ${file}: wrong password or key (or package 0 of ${file} is corrupted)`;
  }
  if (err instanceof WrongPasswordError) return `${err.message}: nothing was read or written; try again`;
  if (err instanceof ShortPrefixError) {
    return `${err.file ?? 'input'} is not a DARE file: ${err.detail}, too short to hold the 32-byte prefix`;
  }
  if (err instanceof InvalidPayloadSizeError && truncations.has(err)) {
    return `package ${err.packageIndex} of ${err.file ?? 'the stream'} is cut short: the file is truncated`;
  }
  if (err instanceof UsageError && err.command !== undefined) {
    return `${err.message}\nRun 'darefs ${err.command} --help' for usage.`;
  }
  if (isErrno(err)) {
    const where = err.path !== undefined ? ` ${err.path}` : '';
    return `${err.syscall ?? 'I/O'}${where}: ${describeErrno(err)}`;
  }
  if (err instanceof Error) {
    return isExpected(err) ? err.message : `unexpected error: ${err.message} (run with DAREFS_DEBUG=1 for details)`;
  }
  return `unexpected error: ${String(err)}`;
}
