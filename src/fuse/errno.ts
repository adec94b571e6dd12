import * as os from 'node:os';
import { DareError, LinkTargetTooLongError, SealedLinkError } from '../dare';
import { KeyError } from '../keys';
import {
  ClosedFileError,
  FileNameTooLongError,
  InvalidAttrNameError,
  NameTooLongError,
  NoSuchAttributeError,
  NotRegularFileError,
  ReadOnlyError,
  SealedAttrError,
  ShortCipherFileError,
  UnrepresentableNameError,
  UnsafePathError,
} from '../store';
import { Errno } from './native-types';

/**
 * The one place errors become errnos. A stream that fails verification is EIO, never data;
 * an error from the cipher directory passes its own errno through.
 */
export function toErrno(err: unknown): number {
  if (err instanceof DareError) return Errno.EIO;
  // A symlink target that is not sealed or does not authenticate: never handed to the kernel.
  if (err instanceof SealedLinkError) return Errno.EIO;
  if (err instanceof LinkTargetTooLongError) return Errno.ENAMETOOLONG;
  if (err instanceof ReadOnlyError) return Errno.EROFS;
  // Extended attributes (src/store/xattrs.ts): a value that does not authenticate is never
  // returned; a name whose sealed form is too long is what setxattr(2) answers a long name.
  if (err instanceof SealedAttrError) return Errno.EIO;
  if (err instanceof InvalidAttrNameError) return Errno.EINVAL;
  if (err instanceof NoSuchAttributeError) return Errno.ENODATA;
  if (err instanceof NameTooLongError) return Errno.ERANGE;
  if (err instanceof ClosedFileError) return Errno.EBADF;
  // Something planted in the cipher directory: an I/O error for that entry, never followed.
  if (err instanceof UnsafePathError || err instanceof NotRegularFileError) return Errno.EIO;
  if (err instanceof KeyError) return Errno.EIO;
  // Less than a prefix: no content to give, nothing to guess.
  if (err instanceof ShortCipherFileError) return Errno.EIO;
  // A name a plain-names volume cannot store (not UTF-8): the name is invalid there.
  if (err instanceof UnrepresentableNameError) return Errno.EINVAL;
  if (err instanceof FileNameTooLongError) return Errno.ENAMETOOLONG;
  const code = typeof err === 'object' && err !== null ? (err as NodeJS.ErrnoException).code : undefined;
  if (code !== undefined) {
    const n = (os.constants.errno as Record<string, number>)[code];
    if (typeof n === 'number') return -n;
  }
  // Errors from native/darefs_sys carry the errno itself even when its code has no name there.
  const errno = typeof err === 'object' && err !== null ? (err as NodeJS.ErrnoException).errno : undefined;
  if (typeof errno === 'number' && errno < 0) return errno;
  return Errno.EIO;
}

/** Whether an error is worth a log line (not the ordinary ENOENT/EEXIST of a working system). */
export function isProblem(err: unknown): boolean {
  if (err instanceof UnsafePathError || err instanceof NotRegularFileError || err instanceof SealedLinkError || err instanceof ShortCipherFileError) return true;
  if (err instanceof LinkTargetTooLongError || err instanceof FileNameTooLongError || err instanceof NoSuchAttributeError || err instanceof NameTooLongError) return false;
  return err instanceof DareError || err instanceof KeyError || !(typeof err === 'object' && err !== null && 'code' in err);
}
