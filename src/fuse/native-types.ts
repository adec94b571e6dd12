/**
 * Types for fuse-native@2.2.6 as it actually behaves (index.js + fuse-native.c), not as its
 * README says. These are the handler shapes `FuseMount` (./native.ts) passes through to you.
 *
 * Error convention: every callback's first argument is `0` for success or a NEGATIVE errno
 * (fuse-native's own constants are negative: `Fuse.ENOENT === -2`; the C side returns the value
 * unchanged to libfuse, which expects `-errno`). Node's `err.errno` is already negative on Linux
 * (libuv), but `os.constants.errno.ENOENT` is positive: negate that one. A positive value in the
 * error slot of a non-read/write callback is passed to libfuse as a success-with-value and will
 * confuse the kernel; never do that.
 *
 * Read/write are different: their callback takes ONE number, the byte count (>= 0) or a negative
 * errno.
 */

/** 0 for success, or a negative errno (see `Errno`). */
export type FuseResult = number;

export type DoneCallback = (err: FuseResult) => void;
export type ValueCallback<T> = (err: FuseResult, value?: T) => void;
/** read/write: bytes transferred (>= 0), or a negative errno. */
export type IoCallback = (bytesOrErrno: number) => void;

/**
 * A time as fuse-native accepts it: a Date, milliseconds since the epoch, or (bigint) exact
 * nanoseconds since the epoch.
 */
export type FuseTime = Date | number | bigint;

/**
 * A time as `utimens` receives it (libfuse's `struct timespec`, decoded): `sec` is the exact
 * 64-bit tv_sec (negative before 1970), `nsec` 0..999 999 999. 'now': set the current time
 * (UTIME_NOW, e.g. `touch` without a date); 'omit': leave this time as it is (UTIME_OMIT, e.g. the
 * atime of `touch -m`).
 */
export type FuseTimespec = { readonly sec: bigint; readonly nsec: number } | 'now' | 'omit';

/** libfuse's tv_nsec special values (<sys/stat.h>). */
export const UTIME_NOW = 0x3fffffff;
export const UTIME_OMIT = 0x3ffffffe;

/**
 * The stat fields fuse-native copies (getStatArray). All are optional in fuse-native, with
 * defaults that are easy to trip over: nlink 1, times `Date.now()` (so a missing mtime changes on
 * every getattr), everything else 0. Packed into a Uint32Array: `ino`, `dev`, `rdev`, `uid`, `gid`,
 * `mode`, `blksize` are truncated to 32 bits; `size` and `blocks` carry 53 bits; times are exact
 * nanoseconds with darefs's patched binary, else milliseconds. `ino` is only used by libfuse with
 * `use_ino`.
 */
export interface FuseStat {
  mode: number;
  size?: number;
  uid?: number;
  gid?: number;
  nlink?: number;
  ino?: number;
  dev?: number;
  rdev?: number;
  blksize?: number;
  /** 512-byte blocks. */
  blocks?: number;
  atime?: FuseTime;
  mtime?: FuseTime;
  ctime?: FuseTime;
}

/** statvfs fields; each is a uint32 in fuse-native (a block count above 2^32 is truncated). */
export interface FuseStatfs {
  bsize?: number;
  frsize?: number;
  blocks?: number;
  bfree?: number;
  bavail?: number;
  files?: number;
  ffree?: number;
  favail?: number;
  fsid?: number;
  flag?: number;
  namemax?: number;
}

/**
 * Operation handlers, in the argument order fuse-native 2.2.6 really uses. Notes per op:
 * - `fgetattr`: stock fuse-native ignores it and calls `getattr(path)`; FuseMount routes it here
 *   with the file handle. Without `fgetattr`, fstat goes to `getattr(path)` (after unlink the path
 *   is libfuse's `.fuse_hiddenXXXX` name).
 * - `fsync`/`fsyncdir`: `(path, datasync, fd, cb)` — the README's `(path, fd, datasync)` is wrong.
 * - `create`: gets NO open flags (fuse-native does not pass fi->flags); the fd returned is used
 *   for the following writes.
 * - `opendir`: stock fuse-native passes the (still 0) file handle as `flags`; FuseMount passes
 *   the real flags.
 * - `open`/`opendir`/`create`: the fd you return is stored as fi->fh (uint32). Returning fd 0
 *   leaves fi->fh unchanged (also 0): use fds >= 1 if you need to tell them apart.
 * - `read`/`write`: `buffer` points into libfuse memory and is DETACHED after the callback:
 *   copy anything you keep; fill `buffer` before calling back. `position` is a JS number
 *   (exact up to 2^53).
 * - `readdir`: the stats array is passed to libfuse but libfuse 2.9 ignores it for lookups;
 *   only names matter. All names go out in one batch (no offsets).
 * - `utimens`: exact times (`FuseTimespec`: seconds + nanoseconds, or 'now' / 'omit') when
 *   fuse-native was patched at install (scripts/patch-fuse-native.js). Stock 2.2.6 sends the atime
 *   in ms in BOTH slots and libfuse never calls it for a one-time change (touch -m / -a);
 *   FuseMount then passes that atime (ms precision) as both times and warns once
 *   (`fuseUtimensExact()` says which binary is loaded).
 * - `symlink(target, linkPath)`, `link(existingPath, newPath)`.
 * - `create`/`mkdir`/`mknod`/`symlink`: `caller` is the uid and gid of the process asking, with
 *   the patched binary (undefined with stock fuse-native, which does not pass them).
 */
export interface FuseOperations {
  init?: (cb: DoneCallback) => void;
  error?: (cb: DoneCallback) => void;
  access?: (path: string, mode: number, cb: DoneCallback) => void;
  statfs?: (path: string, cb: ValueCallback<FuseStatfs>) => void;
  getattr?: (path: string, cb: ValueCallback<FuseStat>) => void;
  fgetattr?: (path: string, fd: number, cb: ValueCallback<FuseStat>) => void;
  flush?: (path: string, fd: number, cb: DoneCallback) => void;
  fsync?: (path: string, datasync: number, fd: number, cb: DoneCallback) => void;
  fsyncdir?: (path: string, datasync: number, fd: number, cb: DoneCallback) => void;
  readdir?: (path: string, cb: (err: FuseResult, names?: string[], stats?: FuseStat[]) => void) => void;
  truncate?: (path: string, size: number, cb: DoneCallback) => void;
  ftruncate?: (path: string, fd: number, size: number, cb: DoneCallback) => void;
  utimens?: (path: string, atime: FuseTimespec, mtime: FuseTimespec, cb: DoneCallback) => void;
  readlink?: (path: string, cb: ValueCallback<string>) => void;
  chown?: (path: string, uid: number, gid: number, cb: DoneCallback) => void;
  chmod?: (path: string, mode: number, cb: DoneCallback) => void;
  mknod?: (path: string, mode: number, dev: number, caller: FuseCaller | undefined, cb: DoneCallback) => void;
  setxattr?: (path: string, name: string, value: Buffer, position: number, flags: number, cb: DoneCallback) => void;
  /** Return `null`/undefined value for "no such attribute" (fuse-native maps it to ENODATA). */
  getxattr?: (path: string, name: string, position: number, cb: ValueCallback<Buffer | null>) => void;
  listxattr?: (path: string, cb: ValueCallback<string[]>) => void;
  removexattr?: (path: string, name: string, cb: DoneCallback) => void;
  open?: (path: string, flags: number, cb: ValueCallback<number>) => void;
  opendir?: (path: string, flags: number, cb: ValueCallback<number>) => void;
  read?: (path: string, fd: number, buffer: Buffer, length: number, position: number, cb: IoCallback) => void;
  write?: (path: string, fd: number, buffer: Buffer, length: number, position: number, cb: IoCallback) => void;
  release?: (path: string, fd: number, cb: DoneCallback) => void;
  releasedir?: (path: string, fd: number, cb: DoneCallback) => void;
  create?: (path: string, mode: number, caller: FuseCaller | undefined, cb: ValueCallback<number>) => void;
  unlink?: (path: string, cb: DoneCallback) => void;
  rename?: (src: string, dest: string, cb: DoneCallback) => void;
  /** rename with RENAME_NOREPLACE / RENAME_EXCHANGE (the own transport only; libfuse 2 has no rename2). */
  rename2?: (src: string, dest: string, flags: number, cb: DoneCallback) => void;
  /** fallocate(2) through an open file: mode 0 or FALLOC_FL_KEEP_SIZE (the own transport only). */
  fallocate?: (path: string, fd: number, mode: number, offset: number, length: number, cb: DoneCallback) => void;
  /** lseek SEEK_DATA / SEEK_HOLE (the own transport only): the offset found. */
  lseek?: (path: string, fd: number, offset: number, whence: number, cb: ValueCallback<number>) => void;
  link?: (existingPath: string, newPath: string, cb: DoneCallback) => void;
  symlink?: (target: string, linkPath: string, caller: FuseCaller | undefined, cb: DoneCallback) => void;
  mkdir?: (path: string, mode: number, caller: FuseCaller | undefined, cb: DoneCallback) => void;
  rmdir?: (path: string, cb: DoneCallback) => void;
}

/** The process a request comes from (libfuse's fuse_get_context()). */
export interface FuseCaller {
  uid: number;
  gid: number;
}

export type FuseOpName = keyof FuseOperations;

/**
 * Negative errno values, identical to fuse-native's `Fuse.EXXX` and to `-os.constants.errno.EXXX`
 * on Linux (checked in test/fuse-adapter.test.ts). Literal so they can be used in types/switches.
 */
export const Errno = {
  EPERM: -1,
  ENOENT: -2,
  EINTR: -4,
  EIO: -5,
  ENXIO: -6,
  EBADF: -9,
  EAGAIN: -11,
  ENOMEM: -12,
  EACCES: -13,
  EBUSY: -16,
  EEXIST: -17,
  EXDEV: -18,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  ENFILE: -23,
  EMFILE: -24,
  EFBIG: -27,
  ENOSPC: -28,
  ESPIPE: -29,
  EROFS: -30,
  EMLINK: -31,
  ERANGE: -34,
  ENAMETOOLONG: -36,
  ENOSYS: -38,
  ENOTEMPTY: -39,
  ELOOP: -40,
  ENODATA: -61,
  EOVERFLOW: -75,
  EOPNOTSUPP: -95,
  ENOTCONN: -107,
  ETIMEDOUT: -110,
  ESTALE: -116,
} as const;

export type ErrnoName = keyof typeof Errno;

/**
 * fuse-native's constructor options that this project uses (the rest of its option bag is
 * replaced by FuseMount's own `_fuseOptions`). `timeout`: ms per op; `false` disables the timer
 * for that op; `default` applies to ops not listed. On expiry fuse-native answers ETIMEDOUT and
 * silently drops the handler's late reply.
 */
export interface FuseNativeOptions {
  timeout?: false | number | ({ default?: number } & Partial<Record<FuseOpName, number | false>>);
  debug?: boolean;
}
