/**
 * Thin adapter over fuse-native@2.2.6. It exists to fix what the pinned package gets wrong on
 * this platform, and nothing else:
 * - the binding links libfuse.so.2 but does not find its bundled copy: preload it (loadFuse);
 * - unmount shells out to `fusermount -uz`, absent here: our own `_close` (mountpoint.ts);
 * - no big_writes and a broken option builder (`userId`, falsy timeouts): our own `_fuseOptions`;
 * - the 15 s per-op timeout answers ETIMEDOUT and drops the late reply: off for mutating ops,
 *   120 s elsewhere;
 * - `fgetattr` is routed to `getattr(path)` and `opendir` gets the file handle as flags: fixed;
 * - `utimens` gets the atime twice, in ms: scripts/patch-fuse-native.js patches the C code at
 *   install to pass both times exactly; `_op_utimens` decodes that (or falls back, with a warning);
 * - a handler that throws or never calls back wedges a libfuse thread (no timeout on writes), and
 *   a double callback posts the thread's semaphore twice and corrupts the next reply: every
 *   handler is guarded.
 * Types of the handlers: ./native-types.ts.
 */
import { constants as osConstants } from 'node:os';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Errno, UTIME_NOW, UTIME_OMIT } from './native-types';
import type { FuseCaller, FuseNativeOptions, FuseOperations, FuseOpName, FuseStat, FuseTime, FuseTimespec } from './native-types';
import { MountpointError, canonicalMountpoint, readMountInfo, unmountPath, type MountEntry } from './mountpoint';

// ---------------------------------------------------------------------------------------------
// fuse-native's shape (it ships no types)

type NativeCallback = (err: Error | null) => void;
type Signal = (err: number, ...values: unknown[]) => void;

export interface FuseNativeInstance {
  readonly mnt: string;
  readonly ops: FuseOperations;
  _thread: Buffer | null;
  _fuseOptions(): string;
  _close(cb: NativeCallback): void;
  mount(cb: NativeCallback): void;
  unmount(cb: NativeCallback): void;
}

export type FuseNativeStatic = new (mnt: string, ops: FuseOperations, opts?: FuseNativeOptions) => FuseNativeInstance;

interface FuseBinding {
  /** Unrefs the thread's uv_async (the pthread_join is commented out in 2.2.6). */
  fuse_native_unmount(mnt: string, thread: Buffer | null): void;
  /** 1 when built from the source patched by scripts/patch-fuse-native.js; absent in stock 2.2.6. */
  darefs_utimens_ns?: number;
  /** 2 when the patched binary reads stat times as 64-bit seconds + nanoseconds (else unsigned ms). */
  darefs_stat_ns?: number;
  /** 1 when create/mkdir/mknod/symlink also pass the caller's uid and gid. */
  darefs_caller_ids?: number;
}

interface NodeGypBuild {
  (dir: string): unknown;
  path(dir: string): string;
}

export interface LoadedFuse {
  Fuse: FuseNativeStatic;
  binding: FuseBinding;
  /** The libfuse we preloaded (undefined: none, the binding's own lookup was used). */
  libfuse: string | undefined;
}

// RTLD_NODELETE keeps the library mapped after the failed addon registration below.
const RTLD_NODELETE = 0x1000;
let loaded: LoadedFuse | undefined;

/**
 * Load fuse-native once. On Linux, first dlopen its bundled libfuse.so RTLD_GLOBAL so the
 * binding's DT_NEEDED libfuse.so.2 resolves to it (its SONAME) without LD_LIBRARY_PATH or any
 * system change; fall back to a system libfuse.so.2.
 */
export function loadFuse(): LoadedFuse {
  if (loaded) return loaded;
  const fuseDir = path.dirname(require.resolve('fuse-native'));
  const ngb = require(require.resolve('node-gyp-build', { paths: [fuseDir] })) as NodeGypBuild;
  const libfuse = process.platform === 'linux' ? preloadLibfuse(fuseDir, ngb) : undefined;
  let Fuse: FuseNativeStatic;
  try {
    Fuse = require('fuse-native') as FuseNativeStatic;
  } catch (err) {
    throw new Error(
      `cannot load fuse-native (libfuse.so.2 ${libfuse ? `preloaded from ${libfuse}` : 'not found'}): ` +
        `${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  // Same path → same cached addon module as the one fuse-native holds.
  const binding = ngb(fuseDir) as FuseBinding;
  loaded = { Fuse, binding, libfuse };
  return loaded;
}

/**
 * True when the loaded fuse-native binary is the one scripts/patch-fuse-native.js rebuilt at
 * install: `utimens` then gets exact atime and mtime (seconds, nanoseconds, UTIME_NOW/OMIT).
 */
export function fuseUtimensExact(): boolean {
  return loadFuse().binding.darefs_utimens_ns === 1;
}

/** True when the loaded binary takes stat times in exact nanoseconds (patched at install). */
export function fuseStatExact(): boolean {
  return loadFuse().binding.darefs_stat_ns === 2;
}

/**
 * What the loaded fuse-native binary lacks of scripts/patch-fuse-native.js, as consequences a
 * user would notice; empty when it is the patched build.
 */
export function fusePatchGaps(): string[] {
  const b = loadFuse().binding;
  const gaps: string[] = [];
  if (b.darefs_utimens_ns !== 1) gaps.push('touch -m / -a are ignored and set times lose their sub-second part');
  if (b.darefs_stat_ns !== 2) gaps.push('times read through the mount are in milliseconds, none before 1970');
  if (b.darefs_caller_ids !== 1) gaps.push("what other users create belongs to the daemon's user");
  return gaps;
}

/** fuse-native's own constant, e.g. `fuseNativeErrno('ENOENT') === -2` (used to check `Errno`). */
export function fuseNativeErrno(name: string): number | undefined {
  const value = (loadFuse().Fuse as unknown as Record<string, unknown>)[name];
  return typeof value === 'number' ? value : undefined;
}

function preloadLibfuse(fuseDir: string, ngb: NodeGypBuild): string | undefined {
  let addonDir: string | undefined;
  try {
    addonDir = path.dirname(ngb.path(fuseDir));
  } catch {
    // no built addon: require('fuse-native') will report it
  }
  const candidates = [
    addonDir && path.join(addonDir, 'libfuse.so'),
    path.join(fuseDir, 'build', 'Release', 'libfuse.so'),
    path.join(fuseDir, 'prebuilds', `linux-${process.arch}`, 'libfuse.so'),
    'libfuse.so.2',
  ].filter((c): c is string => Boolean(c));
  const flags = osConstants.dlopen.RTLD_NOW | osConstants.dlopen.RTLD_GLOBAL | RTLD_NODELETE;
  for (const candidate of new Set(candidates)) {
    if (path.isAbsolute(candidate) && !existsSync(candidate)) continue;
    try {
      process.dlopen({ exports: {} }, candidate, flags);
      return candidate;
    } catch (err) {
      // The library is not a Node addon, so registration fails — after dlopen succeeded.
      if (err instanceof Error && /did not self-register/.test(err.message)) return candidate;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// options

export interface FuseMountOptions {
  /** Source column of the mount table (commas and backslashes are replaced). */
  fsname?: string;
  /** Type becomes `fuse.<subtype>`. Default 'darefs'. */
  subtype?: string;
  allowOther?: boolean;
  /** Let the kernel check modes (wise with allowOther). */
  defaultPermissions?: boolean;
  /** libfuse prints every request on stderr. */
  debug?: boolean;
  /** Mount read-only (`ro`). */
  readOnly?: boolean;
  /** Seconds the kernel caches attributes / lookups. Default 1 each (as gocryptfs). */
  attrTimeout?: number;
  entryTimeout?: number;
  /** Seconds the kernel caches failed lookups. Default 0 (libfuse's). */
  negativeTimeout?: number;
  /** Largest write request (big_writes). Default 131072; the kernel caps libfuse 2 at 128 KiB. */
  maxWrite?: number;
  /** Largest read request; default: the kernel's. */
  maxRead?: number;
  /** Keep the page cache across opens (only when nothing else changes the files). */
  kernelCache?: boolean;
  /** Use the `ino` from getattr instead of libfuse's own numbers. */
  useIno?: boolean;
  /** Raw `-o` options appended last. */
  extraOptions?: string[];
  /** Timeout for non-mutating ops (ms). Default 120 000. Mutating ops never time out. */
  opTimeoutMs?: number;
  /** Give up on mount() if init has not run by then (ms). Default 30 000. */
  mountTimeoutMs?: number;
  /** Poll /proc/self/mountinfo this often to notice an external unmount (ms). 0 = never. Default 1000. */
  watchIntervalMs?: number;
  /** Guard handlers against throwing and double callbacks. Default true. */
  guardOps?: boolean;
  /** Called when a handler throws or calls back twice. Default: one line on stderr. */
  onOpError?: (op: FuseOpName, err: unknown) => void;
}

/** Ops that change state: a timeout would report failure while the change still happens. */
export const UNTIMED_OPS: readonly FuseOpName[] = [
  'write', 'fsync', 'fsyncdir', 'flush', 'release', 'releasedir', 'create', 'truncate', 'ftruncate',
  'unlink', 'rename', 'mkdir', 'rmdir', 'link', 'symlink',
];

export const DEFAULT_OP_TIMEOUT_MS = 120_000;
export const DEFAULT_MAX_WRITE = 131_072;

/** The `-o` options FuseMount passes to libfuse (exported for tests and --debug output). */
export function buildMountOptions(o: FuseMountOptions): string[] {
  const opts: string[] = [];
  const subtype = o.subtype ?? 'darefs';
  if (!/^[\w.-]+$/.test(subtype)) throw new Error(`invalid FUSE subtype ${JSON.stringify(subtype)}`);
  if (o.debug) opts.push('debug');
  if (o.allowOther) opts.push('allow_other');
  if (o.defaultPermissions) opts.push('default_permissions');
  if (o.readOnly) opts.push('ro');
  // libfuse splits on ',' and its escaping differs between the mount and lib parsers: avoid both.
  if (o.fsname) opts.push(`fsname=${o.fsname.replace(/[,\\]/g, '_')}`);
  opts.push(`subtype=${subtype}`);
  opts.push('big_writes', `max_write=${uint(o.maxWrite ?? DEFAULT_MAX_WRITE, 'maxWrite')}`);
  if (o.maxRead !== undefined) opts.push(`max_read=${uint(o.maxRead, 'maxRead')}`);
  opts.push(`attr_timeout=${seconds(o.attrTimeout ?? 1, 'attrTimeout')}`);
  opts.push(`entry_timeout=${seconds(o.entryTimeout ?? 1, 'entryTimeout')}`);
  opts.push(`negative_timeout=${seconds(o.negativeTimeout ?? 0, 'negativeTimeout')}`);
  if (o.kernelCache) opts.push('kernel_cache');
  if (o.useIno) opts.push('use_ino');
  for (const extra of o.extraOptions ?? []) opts.push(extra);
  return opts;
}

function uint(n: number, name: string): number {
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer`);
  return n;
}

function seconds(n: number, name: string): number {
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be >= 0 seconds`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// handler guard

const OP_NAMES: readonly FuseOpName[] = [
  'init', 'error', 'access', 'statfs', 'getattr', 'fgetattr', 'flush', 'fsync', 'fsyncdir', 'readdir',
  'truncate', 'ftruncate', 'utimens', 'readlink', 'chown', 'chmod', 'mknod', 'setxattr', 'getxattr',
  'listxattr', 'removexattr', 'open', 'opendir', 'read', 'write', 'release', 'releasedir', 'create',
  'unlink', 'rename', 'link', 'symlink', 'mkdir', 'rmdir',
];

type LooseHandler = (...args: unknown[]) => void;

function guardOps(ops: FuseOperations, onError: (op: FuseOpName, err: unknown) => void): FuseOperations {
  const source = ops as Record<FuseOpName, LooseHandler | undefined>;
  const guarded: Partial<Record<FuseOpName, LooseHandler>> = {};
  // By name rather than Object.keys: handlers may live on a class prototype.
  for (const name of OP_NAMES) {
    const fn = source[name];
    if (typeof fn !== 'function') continue;
    guarded[name] = (...args: unknown[]): void => {
      const cb = args[args.length - 1] as LooseHandler;
      let done = false;
      args[args.length - 1] = (...result: unknown[]): void => {
        if (done) {
          onError(name, new Error(`${name} called back twice; second result ignored`));
          return;
        }
        done = true;
        cb(...result);
      };
      try {
        fn.apply(ops, args);
      } catch (err) {
        onError(name, err);
        if (!done) {
          done = true;
          cb(Errno.EIO);
        }
      }
    };
  }
  return guarded as FuseOperations;
}

// ---------------------------------------------------------------------------------------------
// the fuse-native subclass

/**
 * fuse-native's stat array (its getStatArray is private; the layout is fixed by populate_stat in
 * the C code). Times: with the patched binary (`exact`), per time tv_sec low, tv_sec high (as
 * int32) and tv_nsec, so any time is exact; stock, unsigned milliseconds (none before 1970).
 */
function toStatArray(stat: FuseStat | undefined, exact: boolean): Uint32Array {
  const ints = new Uint32Array(exact ? 21 : 18);
  const put64 = (i: number, n: number): void => {
    ints[i] = n % 4294967296;
    ints[i + 1] = (n - (n % 4294967296)) / 4294967296;
  };
  let at = 12;
  const putTime = (t: FuseTime | undefined): void => {
    const ns = t === undefined ? BigInt(Date.now()) * 1_000_000n : typeof t === 'bigint' ? t : BigInt(Math.round((typeof t === 'number' ? t : t.getTime()) * 1e6));
    if (exact) {
      // Floor division: -1.5 s is tv_sec -2, tv_nsec 500 000 000.
      let sec = ns / 1_000_000_000n;
      if (sec * 1_000_000_000n > ns) sec -= 1n;
      ints[at++] = Number(BigInt.asUintN(32, sec));
      ints[at++] = Number(BigInt.asUintN(32, sec >> 32n));
      ints[at++] = Number(ns - sec * 1_000_000_000n);
    } else {
      put64(at, ns < 0n ? 0 : Number(ns / 1_000_000n));
      at += 2;
    }
  };
  ints[0] = stat?.mode ?? 0;
  ints[1] = stat?.uid ?? 0;
  ints[2] = stat?.gid ?? 0;
  put64(3, stat?.size ?? 0);
  ints[5] = stat?.dev ?? 0;
  ints[6] = stat?.nlink || 1;
  ints[7] = stat?.ino ?? 0;
  ints[8] = stat?.rdev ?? 0;
  ints[9] = stat?.blksize ?? 0;
  put64(10, stat?.blocks ?? 0);
  putTime(stat?.atime);
  putTime(stat?.mtime);
  putTime(stat?.ctime);
  return ints;
}

function callerOf(uid: number | undefined, gid: number | undefined): FuseCaller | undefined {
  return typeof uid === 'number' && typeof gid === 'number' ? { uid, gid } : undefined;
}

const TWO_32 = 4294967296;

/** One time from the patched binary: tv_sec low (uint32) and high (int32) halves, tv_nsec. */
export function decodeTimespec(secLow: number, secHigh: number, nsec: number): FuseTimespec {
  if (nsec === UTIME_NOW) return 'now';
  if (nsec === UTIME_OMIT) return 'omit';
  return { sec: BigInt(secHigh) * BigInt(TWO_32) + BigInt(secLow), nsec };
}

/**
 * Stock 2.2.6: the atime in ms (uint32 low, high), floored from tv_sec * 1000 + tv_nsec / 1e6, so
 * UTIME_NOW and UTIME_OMIT (tv_sec 0) both arrive as 1073 ms: read as 'now'.
 */
export function decodeStockUtimensMs(low: number, high: number): FuseTimespec {
  const ms = high * TWO_32 + low;
  if (ms === Math.floor(UTIME_NOW / 1e6)) return 'now';
  return { sec: BigInt(Math.floor(ms / 1000)), nsec: (ms % 1000) * 1_000_000 };
}

let warnedStockUtimens = false;

/** Once per process: the binary is stock fuse-native, utimens is approximate. */
function warnStockUtimens(): void {
  if (warnedStockUtimens) return;
  warnedStockUtimens = true;
  process.stderr.write(
    'darefs: warning: fuse-native is not patched (scripts/patch-fuse-native.js did not run or failed): ' +
      'utimens gets only the atime, in milliseconds, and sets it as both atime and mtime; libfuse ignores ' +
      'a change of one time only (touch -m, touch -a). ' +
      'Run `node scripts/patch-fuse-native.js` in the darefs directory to fix this.\n',
  );
}

interface ClosePlan {
  lazy: boolean;
  timeoutMs: number | undefined;
}

interface DarefsFuseInstance extends FuseNativeInstance {
  optionString: string;
  mountId: number | undefined;
  closePlan: ClosePlan;
}

type DarefsFuseClass = new (mnt: string, ops: FuseOperations, opts: FuseNativeOptions) => DarefsFuseInstance;
let DarefsFuse: DarefsFuseClass | undefined;

function darefsFuseClass(): DarefsFuseClass {
  if (DarefsFuse) return DarefsFuse;
  const { Fuse, binding } = loadFuse();
  const statNanoseconds = binding.darefs_stat_ns === 2;
  class Subclass extends Fuse implements DarefsFuseInstance {
    optionString = '';
    mountId: number | undefined = undefined;
    closePlan: ClosePlan = { lazy: false, timeoutMs: undefined };

    override _fuseOptions(): string {
      return this.optionString;
    }

    /**
     * Replaces `fusermount -uz` + native unmount. Same order as the original: the kernel unmount
     * first (it ends the FUSE loop: /dev/fuse reads fail with ENODEV), then the native call,
     * which in 2.2.6 only unrefs the loop's uv_async so the process may exit (no join). On
     * failure (busy) the native call is skipped so the mount keeps being served and Nanoresource
     * lets close be retried. If the mount is already gone (unmounted from outside), only the
     * native part runs.
     */
    override _close(cb: NativeCallback): void {
      const { lazy, timeoutMs } = this.closePlan;
      const unmountKernel = async (): Promise<void> => {
        const entries = await readMountInfo();
        // Mount IDs are reused once freed: an ID alone may name another, newer mount.
        const ours = entries.some((e) => e.mountPoint === this.mnt && (this.mountId === undefined || e.id === this.mountId));
        if (!ours) return;
        try {
          await unmountPath(this.mnt, { lazy, timeoutMs, mountId: this.mountId });
        } catch (err) {
          if (err instanceof MountpointError && err.code === 'NOTMOUNTED') return;
          throw err;
        }
      };
      unmountKernel().then(
        () => {
          try {
            binding.fuse_native_unmount(this.mnt, this._thread);
          } catch (err) {
            cb(err instanceof Error ? err : new Error(String(err)));
            return;
          }
          cb(null);
        },
        (err: unknown) => cb(err instanceof Error ? err : new Error(String(err))),
      );
    }

    /** Stat arrays in the binary's time encoding (stock getStatArray sends milliseconds). */
    _op_getattr(signal: Signal, p: string): void {
      const getattr = this.ops.getattr;
      if (!getattr) {
        signal(Errno.ENOSYS, toStatArray(undefined, statNanoseconds));
        return;
      }
      // Also on error: C reads the array whatever the result, and fuse-native's default one has
      // the stock length.
      getattr(p, (err, stat) => signal(err, toStatArray(err ? undefined : stat, statNanoseconds)));
    }

    /** Stock fuse-native calls ops.getattr(path) here and drops the handle. */
    _op_fgetattr(signal: Signal, p: string, fd: number): void {
      const ops = this.ops;
      const reply = (err: number, stat?: FuseStat): void => signal(err, toStatArray(err ? undefined : stat, statNanoseconds));
      if (ops.fgetattr) ops.fgetattr(p, fd, reply);
      else if (ops.getattr) ops.getattr(p, reply);
      else reply(Errno.ENOSYS);
    }

    /**
     * Patched binary (scripts/patch-fuse-native.js): per time, tv_sec low, tv_sec high, tv_nsec.
     * Stock 2.2.6: the atime in ms (low, high), twice. Told apart by the argument count, so a
     * stale binary can never be misread.
     */
    _op_utimens(signal: Signal, p: string, ...raw: number[]): void {
      const ops = this.ops;
      if (!ops.utimens) {
        signal(Errno.ENOSYS);
        return;
      }
      let atime: FuseTimespec;
      let mtime: FuseTimespec;
      if (raw.length === 6) {
        atime = decodeTimespec(raw[0]!, raw[1]!, raw[2]!);
        mtime = decodeTimespec(raw[3]!, raw[4]!, raw[5]!);
      } else {
        warnStockUtimens();
        atime = mtime = decodeStockUtimensMs(raw[0] ?? 0, raw[1] ?? 0);
      }
      ops.utimens(p, atime, mtime, (err) => signal(err));
    }

    /**
     * Stock fuse-native copies as much of the value as fits and still answers its full length,
     * which libfuse then sends from a buffer that short. A value longer than the caller's buffer
     * is ERANGE; a size query (empty buffer) gets the length.
     */
    _op_getxattr(signal: Signal, p: string, name: string, valueBuf: Buffer, position: number): void {
      const getxattr = this.ops.getxattr;
      if (!getxattr) {
        signal(Errno.ENOSYS, valueBuf.buffer);
        return;
      }
      getxattr(p, name, position, (err, value) => {
        if (err) signal(err, valueBuf.buffer);
        else if (!value) signal(Errno.ENODATA, valueBuf.buffer);
        else if (valueBuf.length === 0) signal(value.length, valueBuf.buffer);
        else if (value.length > valueBuf.length) signal(Errno.ERANGE, valueBuf.buffer);
        else {
          value.copy(valueBuf);
          signal(value.length, valueBuf.buffer);
        }
      });
    }

    /** As getxattr: the exact size for a size query (stock adds 128 bytes), ERANGE when short. */
    _op_listxattr(signal: Signal, p: string, listBuf: Buffer): void {
      const listxattr = this.ops.listxattr;
      if (!listxattr) {
        signal(Errno.ENOSYS, listBuf.buffer);
        return;
      }
      listxattr(p, (err, names) => {
        if (err || !names) {
          signal(err || Errno.EIO, listBuf.buffer);
          return;
        }
        const list = Buffer.from(names.map((n) => `${n}\0`).join(''), 'utf8');
        if (listBuf.length === 0) signal(list.length, listBuf.buffer);
        else if (list.length > listBuf.length) signal(Errno.ERANGE, listBuf.buffer);
        else {
          list.copy(listBuf);
          signal(list.length, listBuf.buffer);
        }
      });
    }

    /**
     * create, mkdir, mknod, symlink: the patched binary appends the caller's uid and gid to the
     * stock arguments (stock fuse-native's handlers drop them).
     */
    _op_create(signal: Signal, p: string, mode: number, uid?: number, gid?: number): void {
      const create = this.ops.create;
      if (!create) signal(Errno.ENOSYS);
      else create(p, mode, callerOf(uid, gid), (err, fd) => signal(err, fd));
    }

    _op_mkdir(signal: Signal, p: string, mode: number, uid?: number, gid?: number): void {
      const mkdir = this.ops.mkdir;
      if (!mkdir) signal(Errno.ENOSYS);
      else mkdir(p, mode, callerOf(uid, gid), (err) => signal(err));
    }

    _op_mknod(signal: Signal, p: string, mode: number, dev: number, uid?: number, gid?: number): void {
      const mknod = this.ops.mknod;
      if (!mknod) signal(Errno.ENOSYS);
      else mknod(p, mode, dev, callerOf(uid, gid), (err) => signal(err));
    }

    _op_symlink(signal: Signal, target: string, linkPath: string, uid?: number, gid?: number): void {
      const symlink = this.ops.symlink;
      if (!symlink) signal(Errno.ENOSYS);
      else symlink(target, linkPath, callerOf(uid, gid), (err) => signal(err));
    }

    /** The C side passes (path, fh, flags); stock fuse-native hands fh over as flags. */
    _op_opendir(signal: Signal, p: string, _fh: number, flags: number): void {
      const opendir = this.ops.opendir;
      if (!opendir) {
        signal(0, 0);
        return;
      }
      opendir(p, flags, (err, fd) => signal(err, fd));
    }
  }
  DarefsFuse = Subclass;
  return Subclass;
}

// ---------------------------------------------------------------------------------------------
// public API

export type UnmountReason = 'unmounted' | 'external';

export class FuseMountError extends Error {
  override readonly name = 'FuseMountError';
}

export class FuseMount {
  /**
   * Resolves once the FUSE connection is over: after unmount(), or after an unmount from outside
   * (umount, `darefs umount`) once the last user of a lazily detached mount has gone.
   */
  readonly closed: Promise<UnmountReason>;
  private resolveClosed!: (reason: UnmountReason) => void;
  /** 'detached': gone from the mount table but still serving open files (lazy unmount). */
  private state: 'mounted' | 'detached' | 'closed' = 'mounted';
  private detachReason: UnmountReason = 'external';
  private watch: NodeJS.Timeout | undefined;
  private watchIntervalMs = 1000;

  private constructor(
    private readonly fuse: DarefsFuseInstance,
    /** Canonical absolute mount point. */
    readonly mountpoint: string,
    /** Mount ID in /proc/self/mountinfo. */
    readonly mountId: number,
    /** `fuse.<subtype>` */
    readonly fsType: string,
    /** The -o options given to libfuse. */
    readonly options: readonly string[],
    /** Our /dev/fuse descriptors: libfuse closes them when the connection ends. */
    private readonly devFuseFds: readonly number[],
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  /** True until unmounted or detached. */
  get mounted(): boolean {
    return this.state === 'mounted';
  }

  /**
   * Mount `ops` at `mountpoint`; resolves when libfuse has run init and a stat of the mount point
   * has been answered by this process. Expects a checked mount point (mountpoint.ts
   * checkMountpoint): libfuse 2.9 refuses non-empty directories with only a stderr message.
   */
  static async mount(mountpoint: string, ops: FuseOperations, opts: FuseMountOptions = {}): Promise<FuseMount> {
    const Cls = darefsFuseClass();
    const mnt = await canonicalMountpoint(mountpoint);
    const options = buildMountOptions(opts);
    const optionString = '-o' + options.join(',');
    // fuse-native copies both into 1024-byte C buffers and truncates silently.
    if (Buffer.byteLength(mnt) >= 1024) throw new FuseMountError(`mount point path too long: ${mnt}`);
    if (Buffer.byteLength(optionString) >= 1024) throw new FuseMountError('FUSE option string too long');

    const onOpError =
      opts.onOpError ??
      ((op: FuseOpName, err: unknown): void => {
        process.stderr.write(`darefs: FUSE ${op} handler failed: ${err instanceof Error ? err.message : String(err)}\n`);
      });
    const opTimeout = opts.opTimeoutMs ?? DEFAULT_OP_TIMEOUT_MS;
    const timeout: NonNullable<FuseNativeOptions['timeout']> = { default: opTimeout };
    for (const name of UNTIMED_OPS) timeout[name] = false;

    if (ops.utimens && !fuseUtimensExact()) warnStockUtimens();
    const fuse = new Cls(mnt, opts.guardOps === false ? ops : guardOps(ops, onOpError), { timeout });
    fuse.optionString = optionString;

    const fdsBefore = new Set(await devFuseFds());
    const mountTimeoutMs = opts.mountTimeoutMs ?? 30_000;
    try {
      await withDeadline(
        new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve()))),
        mountTimeoutMs,
        () => new FuseMountError(`mounting ${mnt}: libfuse did not run init within ${mountTimeoutMs / 1000} s`),
      );
    } catch (err) {
      if (err instanceof FuseMountError) {
        await unmountPath(mnt, { lazy: true }).catch(() => undefined);
        throw err;
      }
      throw translateMountError(mnt, err);
    }
    const ourFds = (await devFuseFds()).filter((fd) => !fdsBefore.has(fd));

    const entries = await readMountInfo();
    let entry: MountEntry | undefined;
    for (const e of entries) if (e.mountPoint === mnt && e.fsType.startsWith('fuse')) entry = e;
    if (!entry) {
      throw new FuseMountError(`mounting ${mnt}: init ran but the mount is not in /proc/self/mountinfo`);
    }
    fuse.mountId = entry.id;
    const mount = new FuseMount(fuse, mnt, entry.id, entry.fsType, options, ourFds);
    try {
      // Served by our own event loop, which is free while we await: a real end-to-end answer.
      await withDeadline(fsp.stat(mnt), mountTimeoutMs, () => new FuseMountError(`mounting ${mnt}: the mount does not answer stat`));
    } catch (err) {
      await mount.unmount({ lazy: true }).catch(() => undefined);
      throw err;
    }
    mount.watchIntervalMs = opts.watchIntervalMs ?? 1000;
    mount.startWatch();
    return mount;
  }

  /**
   * Unmount and release the FUSE thread. Throws MountpointError: BUSY (MountBusyError names the
   * holders; the mount keeps being served and unmount may be retried), TIMEOUT or FAILED.
   * `lazy` detaches even when busy; the mount then keeps serving the files still open, and
   * `closed` resolves when the last one is closed.
   */
  async unmount(opts: { lazy?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (this.state !== 'mounted') return;
    const lazy = opts.lazy ?? false;
    this.fuse.closePlan = { lazy, timeoutMs: opts.timeoutMs };
    await new Promise<void>((resolve, reject) => this.fuse.unmount((err) => (err ? reject(err) : resolve())));
    if (lazy) this.detached('unmounted');
    else this.markClosed('unmounted');
  }

  private markClosed(reason: UnmountReason): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
    this.resolveClosed(reason);
  }

  /**
   * Out of the mount table, but the connection may live on for files still open. The native
   * side no longer holds the event loop (fuse_native_unmount unrefs it), so a ref'd fast poll
   * keeps the process serving until libfuse closes its /dev/fuse descriptor.
   */
  private detached(reason: UnmountReason): void {
    if (this.state !== 'mounted') return;
    this.state = 'detached';
    this.detachReason = reason;
    if (this.devFuseFds.length === 0) {
      this.markClosed(reason);
      return;
    }
    this.watchIntervalMs = Math.min(this.watchIntervalMs > 0 ? this.watchIntervalMs : 200, 200);
    this.startWatch();
    this.watch?.ref();
  }

  private startWatch(): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
    if (this.watchIntervalMs <= 0 && this.state === 'mounted') return;
    let checking = false;
    this.watch = setInterval(() => {
      if (checking || this.state === 'closed') return;
      checking = true;
      this.check()
        .catch(() => undefined)
        .finally(() => {
          checking = false;
        });
    }, this.watchIntervalMs);
    // Watching alone must not keep a mounted daemon alive (the FUSE handle does that).
    if (this.state === 'mounted') this.watch.unref();
  }

  private async check(): Promise<void> {
    if (this.state === 'mounted') {
      // Match the path too: a freed mount ID is soon reused by another mount.
      if ((await readMountInfo()).some((e) => e.id === this.mountId && e.mountPoint === this.mountpoint)) return;
      // Unmounted from outside: release the native side (no kernel unmount left to do).
      await new Promise<void>((resolve) => this.fuse.unmount(() => resolve()));
      this.detached('external');
    }
    if (this.state === 'detached') {
      const open = new Set(await devFuseFds());
      if (!this.devFuseFds.some((fd) => open.has(fd))) this.markClosed(this.detachReason);
    }
  }
}

/** Descriptors of this process that are open on /dev/fuse. */
async function devFuseFds(): Promise<number[]> {
  const fds: number[] = [];
  for (const name of await fsp.readdir('/proc/self/fd').catch(() => [] as string[])) {
    const target = await fsp.readlink(`/proc/self/fd/${name}`).catch(() => '');
    if (target === '/dev/fuse') fds.push(Number(name));
  }
  return fds;
}

function translateMountError(mnt: string, err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (message === 'Mountpoint does not exist') return new MountpointError('ENOENT', mnt, `mount point ${mnt} does not exist`);
  if (message === 'Mountpoint is not a directory') return new MountpointError('NOTDIR', mnt, `mount point ${mnt} is not a directory`);
  if (message === 'Mountpoint in use') return new MountpointError('MOUNTED', mnt, `${mnt} is already a mount point`);
  if (code === 'ENOTCONN') return new MountpointError('STALE', mnt, `${mnt} is a stale mount (Transport endpoint is not connected)`);
  if (message === 'fuse failed') {
    return new FuseMountError(`libfuse could not mount ${mnt} (its reason is on stderr: e.g. not empty, no /dev/fuse, not permitted)`, { cause: err });
  }
  return err instanceof Error ? err : new FuseMountError(message);
}

function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms);
    work.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
