import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { loadSysCalls, O_CLOEXEC, O_PATH, type SysCalls } from '../sys';
import { NotRegularFileError, UnsafePathError } from './errors';
import { nameText } from './name-text';

const { O_NOFOLLOW, O_DIRECTORY, O_NONBLOCK, O_RDONLY, O_CREAT, O_EXCL } = fs.constants;

// openat2(2) resolve flags (linux/openat2.h).
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_NO_SYMLINKS = 0x04;
const RESOLVE_BENEATH = 0x08;
const CONFINED = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
/** Longest path one system call takes, its NUL included (linux/limits.h). */
const PATH_MAX = 4096;

/**
 * The cipher directory as darefs may touch it (FORMAT.md §6: the directory is hostile). Every
 * path is resolved beneath the directory's own descriptor with no symlink and no ".." on the
 * way (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; without the
 * addon or on a kernel before 5.6, an O_NOFOLLOW walk one component at a time). The last
 * component is never followed either: files open with O_NOFOLLOW, and calls that take a path
 * get `/proc/self/fd/<parent>/<name>`, the parent's descriptor plus one name, which the kernel
 * looks up in exactly that directory, wherever it has been moved (the same as an *at call with
 * AT_SYMLINK_NOFOLLOW on that descriptor, for the calls Node has only by path). So a symlink or
 * a directory swapped in by whoever else writes there can never lead darefs outside, nor into
 * an entry other than the one named.
 *
 * Paths given to it are absolute paths beneath `root` (what the store keeps) or relative ones.
 * What it throws, and what the callbacks it runs throw, name the cipher path (absolute), never
 * the /proc/self/fd path or the relative one the kernel saw: messages reach logs and the CLI.
 */
export class CipherDir {
  /** O_PATH descriptor of the root. */
  readonly fd: number;
  private readonly sys: SysCalls | undefined;
  private openat2Missing = false;

  private constructor(
    /** The root as the user named it (resolved once, at mount: that path is the user's own). */
    readonly root: string,
    fd: number,
  ) {
    this.fd = fd;
    this.sys = loadSysCalls().calls;
  }

  static open(root: string): CipherDir {
    const real = fs.realpathSync(root);
    return new CipherDir(real, fs.openSync(real, O_PATH | O_DIRECTORY | O_CLOEXEC));
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  /** The path relative to the root ('' for the root itself), checked component by component. */
  relative(p: string): string {
    let rel: string;
    if (nodePath.isAbsolute(p)) {
      if (p === this.root) return '';
      if (!p.startsWith(this.root === '/' ? '/' : this.root + '/')) throw new UnsafePathError(p, 'is not inside the cipher directory');
      rel = p.slice(this.root === '/' ? 1 : this.root.length + 1);
    } else {
      rel = p;
    }
    if (rel === '' || rel === '.') return '';
    for (const part of rel.split('/')) {
      if (part === '' || part === '.' || part === '..') throw new UnsafePathError(p, 'has an empty, "." or ".." component');
    }
    return rel;
  }

  /** An absolute path for messages and for the store's bookkeeping. */
  absolute(rel: string): string {
    return rel === '' ? this.root : nodePath.join(this.root, rel);
  }

  /**
   * Opens `p` confined (see the class comment), adding O_NOFOLLOW and O_CLOEXEC to `flags`. A
   * symlink met anywhere, or a way out, is an UnsafePathError; other errors are the system's.
   */
  open(p: string, flags: number, mode = 0o666): number {
    const rel = this.relative(p);
    flags |= O_NOFOLLOW | O_CLOEXEC;
    if (rel === '') return fs.openSync(`/proc/self/fd/${this.fd}`, flags & ~O_NOFOLLOW, mode);
    // Encrypted names make cipher paths longer than the plaintext ones (a 127-byte name takes 192):
    // a path the kernel would refuse whole (ENAMETOOLONG) is opened a component at a time.
    if (this.sys && !this.openat2Missing && Buffer.byteLength(rel) < PATH_MAX) {
      try {
        return this.sys.openat2(this.fd, rel, flags, mode, CONFINED);
      } catch (err) {
        if (errnoCode(err) === 'ENOSYS') this.openat2Missing = true;
        else throw this.explain(err, rel);
      }
    }
    return this.walk(rel, flags, mode);
  }

  /** The O_NOFOLLOW walk: for kernels (or builds) without openat2, and for paths too long for one call. */
  private walk(rel: string, flags: number, mode: number): number {
    const parts = rel.split('/');
    let dir = this.fd;
    try {
      for (let i = 0; i < parts.length - 1; i++) {
        const next = fs.openSync(`/proc/self/fd/${dir}/${parts[i]}`, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dir !== this.fd) fs.closeSync(dir);
        dir = next;
      }
      return fs.openSync(`/proc/self/fd/${dir}/${parts[parts.length - 1]}`, flags, mode);
    } catch (err) {
      throw this.explain(err, rel);
    } finally {
      if (dir !== this.fd) fs.closeSync(dir);
    }
  }

  /**
   * What the confinement refused becomes an UnsafePathError: ELOOP (a symlink), EXDEV (a way
   * out), and ENOTDIR when a symlink stands where a directory was asked for (O_DIRECTORY, and
   * every component of the walk, answer ENOTDIR for a symlink, not ELOOP): refused either way,
   * but the user should see an I/O error and the log say why, not "not a directory".
   */
  private explain(err: unknown, rel: string): unknown {
    const code = errnoCode(err);
    if (code === 'ELOOP' || code === 'EXDEV' || (code === 'ENOTDIR' && this.symlinkOnTheWay(rel))) {
      return new UnsafePathError(this.absolute(rel), 'goes through a symlink or out of the cipher directory');
    }
    // openat2 names `rel`, the walk a /proc/self/fd path of one component.
    const seen = (err as NodeJS.ErrnoException).path;
    return seen === undefined || !(seen === rel || seen.startsWith('/proc/self/fd/')) ? err : namedAs(err, seen, this.absolute(rel));
  }

  /** Whether a component of `rel` is a symlink, looked at one component at a time (never followed). */
  private symlinkOnTheWay(rel: string): boolean {
    let dir = this.fd;
    try {
      for (const part of rel.split('/')) {
        const next = fs.openSync(`/proc/self/fd/${dir}/${part}`, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (dir !== this.fd) fs.closeSync(dir);
        dir = next;
        const st = fs.fstatSync(dir);
        if (st.isSymbolicLink()) return true;
        if (!st.isDirectory()) return false;
      }
      return false;
    } catch {
      return false;
    } finally {
      if (dir !== this.fd) fs.closeSync(dir);
    }
  }

  /**
   * Opens a cipher file's content, which must be a regular file. Its type is checked before it
   * is opened at all: only an O_PATH descriptor is taken first, so a FIFO, socket, device or
   * directory planted in its place is refused (NotRegularFileError) without ever being opened
   * (opening a FIFO can block the daemon for good, a device can act on open: a tty, a tape).
   * The file itself is then opened through that descriptor (/proc/self/fd/N: that very inode,
   * no name looked up again), O_NONBLOCK so that a lease someone holds on it fails the open
   * instead of stalling the daemon. A new file (O_CREAT, which must come with O_EXCL) is made
   * by the confined open directly: O_EXCL never opens what is already there.
   */
  openFile(p: string, flags: number, mode = 0o666): number {
    if (flags & O_CREAT) {
      if (!(flags & O_EXCL)) throw new TypeError(`openFile ${p}: O_CREAT without O_EXCL would open whatever is already there`);
      const fd = this.open(p, flags | O_NONBLOCK, mode);
      try {
        const st = fs.fstatSync(fd);
        if (!st.isFile()) throw new NotRegularFileError(p, st);
      } catch (err) {
        fs.closeSync(fd);
        throw err;
      }
      return fd;
    }
    return this.inode(p, (inode, st) => {
      // O_PATH | O_NOFOLLOW took a symlink as itself: refused as any symlink is.
      if (st.isSymbolicLink()) throw new UnsafePathError(this.absolute(this.relative(p)), 'is a symlink');
      if (!st.isFile()) throw new NotRegularFileError(this.absolute(this.relative(p)), st);
      return fs.openSync(inode, (flags & ~O_NOFOLLOW) | O_NONBLOCK | O_CLOEXEC);
    });
  }

  /** openFile, as a FileHandle (for streams and the promise API). */
  async openHandle(p: string, flags: number, mode = 0o666): Promise<fs.promises.FileHandle> {
    const fd = this.openFile(p, flags, mode);
    try {
      // The descriptor's own inode, whatever is at the name by now; O_CREAT and O_EXCL did their part.
      return await fs.promises.open(`/proc/self/fd/${fd}`, flags & ~(O_CREAT | O_EXCL | fs.constants.O_TRUNC));
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Runs `fn` with a path that names the entry `p` itself, for calls Node offers only by path:
   * `/proc/self/fd/<fd of p's parent>/<name>`. The calls made on it must not follow a final
   * symlink (lstat, lchown, unlink, rmdir, rename, link, mkdir, symlink, readlink, l*xattr...).
   */
  at<T>(p: string, fn: (entry: string) => T): T {
    const rel = this.relative(p);
    if (rel === '') throw new UnsafePathError(p, 'is the cipher directory itself');
    const slash = rel.lastIndexOf('/');
    const parent = slash < 0 ? this.fd : this.open(rel.slice(0, slash), O_PATH | O_DIRECTORY);
    const entry = `/proc/self/fd/${parent}/${rel.slice(slash + 1)}`;
    try {
      return fn(entry);
    } catch (err) {
      throw namedAs(err, entry, this.absolute(rel));
    } finally {
      if (parent !== this.fd) fs.closeSync(parent);
    }
  }

  /** `at` for two entries at once (rename, link). */
  at2<T>(a: string, b: string, fn: (entryA: string, entryB: string) => T): T {
    return this.at(a, (ea) => this.at(b, (eb) => fn(ea, eb)));
  }

  /**
   * Runs `fn` with a path that reaches the inode of `p` itself, through an O_PATH descriptor
   * (`/proc/self/fd/<fd>`), for calls that would follow a final symlink (chmod, access, statfs):
   * `p` is opened without following, so a symlink there is handed to `fn` as the symlink.
   */
  inode<T>(p: string, fn: (inode: string, st: fs.Stats) => T): T {
    const fd = this.open(p, O_PATH);
    const inode = `/proc/self/fd/${fd}`;
    try {
      return fn(inode, fs.fstatSync(fd));
    } catch (err) {
      throw namedAs(err, inode, this.absolute(this.relative(p)));
    } finally {
      fs.closeSync(fd);
    }
  }

  lstat(p: string): fs.Stats;
  lstat(p: string, opts: { bigint: true }): fs.BigIntStats;
  lstat(p: string, opts?: { bigint: true }): fs.Stats | fs.BigIntStats {
    if (this.relative(p) === '') return opts ? fs.fstatSync(this.fd, opts) : fs.fstatSync(this.fd);
    // fstat of an O_PATH | O_NOFOLLOW descriptor (a symlink as itself): half the cost of lstat
    // through /proc/self/fd/<parent>/<name>, and getattr is the most frequent request.
    const fd = this.open(p, O_PATH);
    try {
      return opts ? fs.fstatSync(fd, opts) : fs.fstatSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Entry names, as name-text.ts writes them: lossless also for names that are not UTF-8. */
  readdir(p: string): string[] {
    const fd = this.open(p, O_RDONLY | O_DIRECTORY);
    try {
      return fs.readdirSync(`/proc/self/fd/${fd}`, { encoding: 'buffer' }).map(nameText);
    } finally {
      fs.closeSync(fd);
    }
  }

  readdirTypes(p: string): fs.Dirent[] {
    const fd = this.open(p, O_RDONLY | O_DIRECTORY);
    try {
      return fs.readdirSync(`/proc/self/fd/${fd}`, { withFileTypes: true });
    } finally {
      fs.closeSync(fd);
    }
  }

  /** chmod that never follows a symlink (EOPNOTSUPP for one, as fchmodat(AT_SYMLINK_NOFOLLOW)). */
  chmod(p: string, mode: number): void {
    this.inode(p, (inode, st) => {
      if (st.isSymbolicLink()) throw Object.assign(new Error(`${p}: cannot change the mode of a symlink`), { code: 'EOPNOTSUPP' });
      fs.chmodSync(inode, mode);
    });
  }

  /** fsync of a directory (a new or removed name in it is durable). */
  fsyncDir(p: string, sync: (fd: number, what: string) => void): void {
    const fd = this.open(p, O_RDONLY | O_DIRECTORY);
    try {
      sync(fd, p);
    } finally {
      fs.closeSync(fd);
    }
  }
}

/**
 * An fs error that names `from` (its `path` or, for rename and link, `dest`) names `to` instead,
 * in those fields and in its message. Anything else passes as it is.
 */
function namedAs(err: unknown, from: string, to: string): unknown {
  if (typeof err !== 'object' || err === null) return err;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  for (const key of ['path', 'dest'] as const) {
    if (e[key] !== from) continue;
    e[key] = to;
    // Node quotes the paths in its messages: replacing the quoted form cannot hit a longer name.
    if (typeof e.message === 'string') e.message = e.message.split(`'${from}'`).join(`'${to}'`);
  }
  return err;
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as NodeJS.ErrnoException).code : undefined;
}
