import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * The Linux calls Node's fs lacks, from darefs's own addon (native/darefs_sys.c, built at
 * install by scripts/build-native.js). Synchronous, like the other metadata calls on the local
 * cipher directory; failures throw errors shaped like Node's fs errors (`code`, `errno`,
 * `syscall`, `path`). Never follows a symlink.
 */
export interface SysCalls {
  /** The value; throws ENODATA when there is no such attribute. */
  lgetxattr(file: string, name: string): Buffer;
  /** flags: 0, XATTR_CREATE or XATTR_REPLACE. */
  lsetxattr(file: string, name: string, value: Buffer, flags: number): void;
  /** The names, NUL-terminated one after another, as the kernel lists them. */
  llistxattr(file: string): Buffer;
  lremovexattr(file: string, name: string): void;
  mknod(file: string, mode: number, major: number, minor: number): void;
  /**
   * Copies every extended attribute of one open file to another (a stream rewritten into a new
   * inode keeps them); skips the ones outside user.* this process may not set. Returns the count.
   */
  fcopyxattrs(fromFd: number, toFd: number): number;
  /** utimensat(AT_SYMLINK_NOFOLLOW) to the nanosecond; nsec may be UTIME_NOW or UTIME_OMIT. */
  lutimens(file: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /** openat2(2): `resolve` is a mask of RESOLVE_* flags; throws ENOSYS before Linux 5.6. */
  openat2(dirfd: number, file: string, flags: number, mode: number, resolve: number): number;
  /** No core dumps and not dumpable (no ptrace, no /proc/PID/mem for the same user). */
  harden(): void;
  /**
   * Zeroes the value of `name` in the environment block /proc/PID/environ shows (after
   * `delete process.env[name]`); returns how many values it overwrote.
   */
  scrubenv(name: string): number;
  /**
   * fallocate(2) on an open file (mode: 0 or FALLOC_FL_* bits); throws ENOSPC/EDQUOT when the
   * space is not there, ENOTSUP (EOPNOTSUPP) or ENOSYS where the file system cannot do it.
   */
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  /** renameat2(2) by path (never following the final component); flags: RENAME_NOREPLACE / RENAME_EXCHANGE. */
  renameat2(from: string, to: string, flags: number): void;
  /** futimens(2): times of an open file, to the nanosecond; a tv_nsec of UTIME_NOW / UTIME_OMIT as the kernel's. */
  futimens(fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
}

/** fallocate mode: allocate without changing the file size. */
export const FALLOC_FL_KEEP_SIZE = 0x01;

/** Linux open(2) flags Node's fs.constants lacks (the same values on x86-64 and arm64). */
export const O_PATH = 0o10000000;
export const O_CLOEXEC = 0o2000000;

/** Where scripts/build-native.js puts the addon: native/ in darefs's own directory. */
export const ADDON_PATH = path.join(packageRoot(__dirname), 'native', 'build', 'Release', 'darefs_sys.node');

/** darefs's directory: the nearest one up from src/sys or dist/src/sys with darefs's package.json. */
function packageRoot(from: string): string {
  for (const dir of [path.resolve(from, '..', '..'), path.resolve(from, '..', '..', '..')]) {
    try {
      if ((JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'darefs') return dir;
    } catch {
      // not this one
    }
  }
  return path.resolve(from, '..', '..', '..');
}

type Loaded = { calls: SysCalls } | { calls: undefined; reason: string };
let loaded: Loaded | undefined;

/**
 * The addon, or undefined with the reason it is missing. DAREFS_NO_NATIVE=1 pretends it is
 * missing (to test and to compare the fallbacks).
 */
export function loadSysCalls(): Loaded {
  if (loaded) return loaded;
  if (process.env['DAREFS_NO_NATIVE']) {
    loaded = { calls: undefined, reason: 'DAREFS_NO_NATIVE is set' };
  } else if (!fs.existsSync(ADDON_PATH)) {
    loaded = { calls: undefined, reason: `${ADDON_PATH} was not built (run: node scripts/build-native.js)` };
  } else {
    try {
      const mod = { exports: {} as SysCalls };
      process.dlopen(mod, ADDON_PATH);
      loaded = { calls: mod.exports };
    } catch (err) {
      loaded = { calls: undefined, reason: `cannot load ${ADDON_PATH}: ${err instanceof Error ? err.message : String(err)}` };
    }
  }
  return loaded;
}

/**
 * Splits llistxattr's NUL-terminated list. Names that are not valid UTF-8 are left out: as JS
 * strings they would turn into other names (U+FFFD), which no later call could find again.
 */
export function splitNames(list: Buffer): string[] {
  const names: string[] = [];
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    if (list[i] !== 0) continue;
    if (i > start) {
      const raw = list.subarray(start, i);
      const name = raw.toString('utf8');
      if (Buffer.from(name, 'utf8').equals(raw)) names.push(name);
    }
    start = i + 1;
  }
  return names;
}

/**
 * Keeps keys and plaintext out of core dumps and away from other processes of the same user
 * (ptrace, /proc/PID/mem): RLIMIT_CORE 0 and PR_SET_DUMPABLE 0. Returns why it could not, or
 * undefined.
 */
export function hardenProcess(): string | undefined {
  const { calls } = loadSysCalls();
  if (!calls) return 'native/darefs_sys is not loaded: the daemon may dump core and stays dumpable';
  try {
    calls.harden();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}
