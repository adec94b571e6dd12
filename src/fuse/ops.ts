import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { DareError, SealedLinkError } from '../dare';
import { CipherDir, CipherFile, isUserAttr, nameBytes, nameText, ReadOnlyError, SealedAttrError, Volume } from '../store';
import { FALLOC_FL_KEEP_SIZE, loadSysCalls, O_PATH, splitNames } from '../sys';
import { toFuseStat, toFuseStatfs } from './attrs';
import { isProblem, toErrno } from './errno';
import { Logger } from './logger';
import { daemonIdentity, EntryKind, NewEntry, settleNewEntry } from './owners';
import { Errno, FuseCaller, FuseOperations, UTIME_NOW, UTIME_OMIT } from './native-types';
import { PathMap } from './paths';

export interface OperationsContext {
  volume: Volume;
  paths: PathMap;
  log: Logger;
}

interface Handle {
  file: CipherFile;
  path: string;
}

const O_ACCMODE = 3;
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const S_IFMT = 0o170000;
const S_IFIFO = 0o010000;
const S_IFREG = 0o100000;

/** fuse-native hands names over as UTF-8 strings: U+FFFD may stand for bytes we cannot recover. */
function isMangled(name: string): boolean {
  return name.includes('\uFFFD');
}

/**
 * The FUSE operations. Metadata calls go to the cipher directory with synchronous fs calls: on
 * a local directory they take a few microseconds, where an asynchronous one costs ~50 µs of
 * thread-pool hops (PERF-NOTES.md). The cipher directory is never inside our own mount (the
 * mount command refuses that), so a synchronous call can never wait on this process.
 *
 * Every call reaches the cipher directory through `dir` (src/store/cipher-dir.ts): confined
 * beneath it, no symlink followed, never by a plain path string. The kernel's permission checks
 * (default_permissions) look at attributes it cached, not at what is there now; confinement is
 * what keeps an entry swapped since from leading the daemon anywhere else.
 */
export function createOperations(ctx: OperationsContext): FuseOperations {
  const { volume, paths, log } = ctx;
  const dir: CipherDir = volume.dir;
  const names = volume.names;
  const xattrs = volume.xattrs;
  const loaded = loadSysCalls();
  const sys = loaded.calls;
  const sysMissing = loaded.calls ? '' : loaded.reason;
  if (!sys) log.info(`native/darefs_sys not loaded (${sysMissing}): no extended attributes, mknod makes FIFOs only, times to the microsecond`);
  const me = daemonIdentity();
  const handles = new Map<number, Handle>();
  let nextHandle = 1;

  function addHandle(file: CipherFile, path: string): number {
    while (handles.has(nextHandle) || nextHandle === 0) nextHandle = (nextHandle + 1) >>> 0;
    const fd = nextHandle;
    nextHandle = (nextHandle + 1) >>> 0;
    handles.set(fd, { file, path });
    return fd;
  }

  function handle(fd: number): Handle {
    const h = handles.get(fd);
    if (!h) throw Object.assign(new Error(`no open file with handle ${fd}`), { code: 'EBADF' });
    return h;
  }

  function fail(op: string, path: string, err: unknown): number {
    const errno = toErrno(err);
    if (err instanceof DareError) {
      log.problem(`${op} ${path}: ${err.message}`, `${err.file ?? path}:${err.constructor.name}:${err.packageIndex}`);
    } else if (err instanceof SealedLinkError) {
      log.problem(err.message, `link:${err.link ?? path}:${err.reason}`);
    } else if (err instanceof SealedAttrError) {
      log.problem(`${op} ${err.message}`, `xattr:${err.path}:${err.attribute}:${err.reason}`);
    } else if (isProblem(err)) {
      log.problem(`${op} ${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
    log.debug(() => `${op} ${path} -> errno ${errno}`);
    return errno;
  }

  /** Runs a synchronous or asynchronous body and answers FUSE with its value or errno. */
  function run<T>(op: string, path: string, cb: (err: number, value?: T) => void, body: () => T | Promise<T>): void {
    log.debug(() => `${op} ${path}`);
    try {
      const result = body();
      if (result instanceof Promise) result.then((v) => cb(0, v), (err: unknown) => cb(fail(op, path, err)));
      else cb(0, result);
    } catch (err) {
      cb(fail(op, path, err));
    }
  }

  /** The mode of the directory a new entry was made in. */
  const parentMode = (cipherPath: string) => (): number => dir.lstat(nodePath.dirname(cipherPath)).mode;

  /** Settles a just-made entry's owner and mode (owners.ts); removes it again if that fails. */
  function settleOrUndo(cipherPath: string, kind: EntryKind, caller: FuseCaller | undefined, mode: number | undefined): void {
    const entry: NewEntry = {
      chown: (uid, gid) => dir.at(cipherPath, (e) => fs.lchownSync(e, uid, gid)),
      chmod: (m) => dir.chmod(cipherPath, m),
      parentMode: parentMode(cipherPath),
    };
    try {
      settleNewEntry(entry, kind, caller, mode, me);
    } catch (err) {
      try {
        dir.at(cipherPath, kind === 'dir' ? fs.rmdirSync : fs.unlinkSync);
      } catch {
        // the settle error is the one to report
      }
      throw err;
    }
  }

  /** A new entry at `cipherPath`, with what its name needs (a long name's `.name` file, FORMAT.md §8). */
  function newEntry<T>(cipherPath: string, make: () => T | Promise<T>): Promise<T> {
    return names.makeEntry(dir, cipherPath, make);
  }

  /** mknod of a FIFO, socket or device node (regular files come through create). */
  async function makeSpecial(cipherPath: string, mode: number, dev: number, caller: FuseCaller | undefined): Promise<void> {
    if (sys) {
      // dev arrives in the kernel's 32-bit encoding (new_encode_dev): 12-bit major, 20-bit minor.
      dir.at(cipherPath, (e) => sys.mknod(e, mode, (dev & 0xfff00) >>> 8, (dev & 0xff) | ((dev >>> 12) & 0xfff00)));
    } else {
      if ((mode & S_IFMT) !== S_IFIFO) throw Object.assign(new Error(`only FIFOs can be made (${sysMissing})`), { code: 'EPERM' });
      await mkfifo(dir, cipherPath, mode & 0o7777);
    }
    settleOrUndo(cipherPath, 'special', caller, mode);
  }

  /**
   * Logs, once per cipher path and kind, what a listing left out because its name does not
   * authenticate (FORMAT.md §8): never shown, but the user learns it is there.
   */
  function reportRefused(op: string, path: string, cipherPath: string, what: [one: string, many: string], refused: { stored: string; reason: string }[], hint = ''): void {
    if (refused.length === 0) return;
    const shown = refused.slice(0, 5).map((r) => `${JSON.stringify(r.stored)} (${r.reason})`);
    log.problem(
      `${op} ${path}: left out ${refused.length} ${refused.length === 1 ? what[0] : what[1]} of ${cipherPath} whose names do not authenticate: ` +
        `${shown.join(', ')}${refused.length > 5 ? ', ...' : ''}${hint}`,
      `${op}:${cipherPath}`,
    );
  }

  /** rename(2), or renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE. */
  async function renameEntry(src: string, dest: string, flags: number): Promise<void> {
    const from = guardChange(src, src);
    const to = guardChange(dest, dest);
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) || flags === (RENAME_NOREPLACE | RENAME_EXCHANGE)) {
      throw Object.assign(new Error(`rename flags ${flags} not supported`), { code: 'EINVAL' });
    }
    if (flags && !sys) throw Object.assign(new Error(`rename with flags needs native/darefs_sys (${sysMissing})`), { code: 'EINVAL' });
    // What was written to `from` is durable before its new name can be (write, close, rename
    // over never leaves the name empty or torn), and the journal names it by its old path. An
    // exchange moves `to` as well.
    await volume.beforeRename(from);
    if (flags & RENAME_EXCHANGE) await volume.beforeRename(to);
    // An exchange moves two names that both have their `.name` files already.
    const move = (): void => {
      if (flags && sys) dir.at2(from, to, (a, b) => sys.renameat2(a, b, flags));
      else dir.at2(from, to, fs.renameSync);
    };
    if (flags & RENAME_EXCHANGE) {
      move();
      volume.exchanged(from, to, (p) => paths.plain(p));
    } else {
      await names.moveEntry(dir, from, to, move);
      volume.renamed(from, to, (p) => paths.plain(p));
    }
  }

  /** Refuses a name that is hidden, or any change on a read-only volume. */
  function guardChange(path: string, what: string): string {
    if (volume.readOnly) throw new ReadOnlyError(what);
    if (paths.isHidden(path)) throw Object.assign(new Error(`${path} is reserved for darefs`), { code: 'EPERM' });
    return paths.cipher(path);
  }

  function visible(path: string): string {
    if (paths.isHidden(path)) throw Object.assign(new Error(`${path} is hidden`), { code: 'ENOENT' });
    return paths.cipher(path);
  }

  function statOf(path: string) {
    const cipherPath = visible(path);
    const st = dir.lstat(cipherPath, { bigint: true });
    const open = st.isFile() ? volume.find(cipherPath, st) : undefined;
    return toFuseStat(st, open?.size, () => log.problem(`${path}: cipher file size ${st.size} is not a valid DARE stream length`, `size:${cipherPath}`));
  }

  return {
    init(cb) {
      cb(0);
    },

    statfs(path, cb) {
      run('statfs', path, cb, () => toFuseStatfs(fs.statfsSync(paths.root)));
    },

    getattr(path, cb) {
      run('getattr', path, cb, () => statOf(path));
    },

    fgetattr(path, fd, cb) {
      run('fgetattr', path, cb, () => {
        const h = handles.get(fd);
        if (!h) return statOf(path);
        // By descriptor: the name may be gone (unlinked while open) or lead elsewhere by now.
        return toFuseStat(h.file.stat(), h.file.size, () => undefined);
      });
    },

    access(path, mode, cb) {
      run('access', path, cb, () => {
        dir.inode(visible(path), (inode) => fs.accessSync(inode, mode));
        if (volume.readOnly && mode & fs.constants.W_OK) throw new ReadOnlyError(path);
      });
    },

    readdir(path, cb) {
      log.debug(() => `readdir ${path}`);
      try {
        const cipherPath = visible(path);
        const listing = names.list(dir, cipherPath);
        reportRefused('readdir', path, cipherPath, ['entry', 'entries'], listing.refused.map((r) => ({ stored: r.entry, reason: r.reason })), '; darefs fsck lists them');
        cb(0, ['.', '..', ...listing.entries.map((e) => e.name)]);
      } catch (err) {
        cb(fail('readdir', path, err));
      }
    },

    opendir(path, _flags, cb) {
      run('opendir', path, cb, () => {
        // Opened confined, as readdir will: a symlink swapped in for the directory is refused
        // (EIO and a log line: planted), a file is ENOTDIR. O_PATH needs no read permission.
        fs.closeSync(dir.open(visible(path), O_PATH | fs.constants.O_DIRECTORY));
        return 0;
      });
    },

    releasedir(_path, _fd, cb) {
      cb(0);
    },

    fsyncdir(path, _datasync, _fd, cb) {
      run('fsyncdir', path, cb, () => dir.fsyncDir(visible(path), (fd) => fs.fsyncSync(fd)));
    },

    open(path, flags, cb) {
      run('open', path, cb, async () => {
        const cipherPath = visible(path);
        if ((flags & O_ACCMODE) !== fs.constants.O_RDONLY) {
          if (volume.readOnly) throw new ReadOnlyError(path);
          // As ext4 does: an open for writing that the cipher file refuses (mode without
          // CAP_DAC_OVERRIDE, immutable, read-only mount below) fails here with that errno,
          // not later at the first write. The shared CipherFile may hold a writable fd already.
          dir.inode(cipherPath, (inode) => fs.accessSync(inode, fs.constants.W_OK));
        }
        const file = await volume.open(cipherPath, path);
        return addHandle(file, path);
      });
    },

    create(path, mode, caller, cb) {
      run('create', path, cb, async () => {
        const cipherPath = guardChange(path, path);
        const entry = (fd: number): NewEntry => ({
          chown: (uid, gid) => fs.fchownSync(fd, uid, gid),
          chmod: (m) => fs.fchmodSync(fd, m),
          parentMode: parentMode(cipherPath),
        });
        const file = await newEntry(cipherPath, () => volume.create(cipherPath, path, mode & 0o7777, (fd) => settleNewEntry(entry(fd), 'file', caller, mode, me)));
        return addHandle(file, path);
      });
    },

    read(path, fd, buffer, length, position, cb) {
      let h: Handle;
      try {
        h = handle(fd);
      } catch (err) {
        cb(fail('read', path, err));
        return;
      }
      h.file.readInto(position, buffer.subarray(0, length)).then(cb, (err: unknown) => cb(fail('read', path, err)));
    },

    write(path, fd, buffer, length, position, cb) {
      let h: Handle;
      try {
        h = handle(fd);
      } catch (err) {
        cb(fail('write', path, err));
        return;
      }
      // The store copies the data into its packages before this resolves, and fuse-native
      // keeps `buffer` alive until we call back.
      h.file.write(position, buffer.subarray(0, length)).then(cb, (err: unknown) => cb(fail('write', path, err)));
    },

    flush(path, fd, cb) {
      run('flush', path, cb, () => handle(fd).file.flush('none'));
    },

    fsync(path, datasync, fd, cb) {
      run('fsync', path, cb, () => handle(fd).file.flush(datasync ? 'data' : 'full'));
    },

    release(path, fd, cb) {
      run('release', path, cb, async () => {
        const h = handles.get(fd);
        if (!h) return;
        handles.delete(fd);
        await volume.release(h.file);
      });
    },

    truncate(path, size, cb) {
      run('truncate', path, cb, async () => {
        const cipherPath = guardChange(path, path);
        // Sealed now, not at the last close: the attributes answered for this truncate (and
        // cached by the kernel) must carry the cipher inode's new size, mtime and ctime.
        await volume.withFile(cipherPath, path, async (file) => {
          await file.truncate(size);
          await file.flush();
        });
      });
    },

    ftruncate(path, fd, size, cb) {
      run('ftruncate', path, cb, () => {
        if (volume.readOnly) throw new ReadOnlyError(path);
        const file = handle(fd).file;
        // Sealed now, as truncate does: the times answered must be the new ones.
        return file.truncate(size).then(() => file.flush());
      });
    },

    unlink(path, cb) {
      run('unlink', path, cb, () => {
        const cipherPath = guardChange(path, path);
        const lastName = volume.beforeUnlink(cipherPath);
        names.removeEntry(dir, cipherPath, () => {
          dir.at(cipherPath, fs.unlinkSync);
          volume.unlinked(cipherPath, lastName);
        });
      });
    },

    rename(src, dest, cb) {
      run('rename', src, cb, () => renameEntry(src, dest, 0));
    },

    rename2(src, dest, flags, cb) {
      run('rename2', src, cb, () => renameEntry(src, dest, flags));
    },

    // Encrypted bytes cannot be sparse: every byte of a file is sealed data, so mode 0 makes the
    // file at least offset+length long with sealed zeros (really allocated), KEEP_SIZE has nothing
    // to allocate beyond what sealing will, and punching or zeroing ranges is not offered.
    fallocate(path, fd, mode, offset, length, cb) {
      run('fallocate', path, cb, async () => {
        if (volume.readOnly) throw new ReadOnlyError(path);
        if (mode & ~FALLOC_FL_KEEP_SIZE) throw Object.assign(new Error(`fallocate mode ${mode} not supported`), { code: 'EOPNOTSUPP' });
        if (offset < 0 || length <= 0) throw Object.assign(new Error('bad fallocate range'), { code: 'EINVAL' });
        const file = handle(fd).file;
        if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > file.size) await file.truncate(offset + length);
      });
    },

    // No holes in a sealed file (see fallocate): data runs from 0 to the end.
    lseek(path, fd, offset, whence, cb) {
      run('lseek', path, cb, () => {
        const size = handle(fd).file.size;
        if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw Object.assign(new Error(`lseek whence ${whence}`), { code: 'EINVAL' });
        if (offset < 0) throw Object.assign(new Error('negative offset'), { code: 'EINVAL' });
        if (offset >= size) throw Object.assign(new Error('offset past the end'), { code: 'ENXIO' });
        return whence === SEEK_DATA ? offset : size;
      });
    },

    mkdir(path, mode, caller, cb) {
      run('mkdir', path, cb, async () => {
        const cipherPath = guardChange(path, path);
        await newEntry(cipherPath, () => {
          dir.at(cipherPath, (e) => fs.mkdirSync(e, mode & 0o7777));
          settleOrUndo(cipherPath, 'dir', caller, mode);
        });
      });
    },

    rmdir(path, cb) {
      run('rmdir', path, cb, () => {
        const cipherPath = guardChange(path, path);
        names.removeDirectory(dir, cipherPath);
      });
    },

    // Targets are sealed (FORMAT.md §7): what the cipher directory holds is never what the
    // kernel follows, so a symlink planted there cannot lead a program outside the volume.
    symlink(target, linkPath, caller, cb) {
      run('symlink', linkPath, cb, async () => {
        const cipherPath = guardChange(linkPath, linkPath);
        const sealed = await volume.sealLink(nameBytes(target));
        await newEntry(cipherPath, () => {
          dir.at(cipherPath, (e) => fs.symlinkSync(sealed, e));
          settleOrUndo(cipherPath, 'symlink', caller, undefined);
        });
      });
    },

    readlink(path, cb) {
      run('readlink', path, cb, async () => {
        const stored = dir.at(visible(path), (e) => fs.readlinkSync(e, { encoding: 'buffer' }));
        return nameText(await volume.openLink(stored, path));
      });
    },

    link(existing, newPath, cb) {
      run('link', newPath, cb, () => {
        const from = guardChange(existing, existing);
        const to = guardChange(newPath, newPath);
        return newEntry(to, () => dir.at2(from, to, fs.linkSync));
      });
    },

    mknod(path, mode, dev, caller, cb) {
      run('mknod', path, cb, async () => {
        const cipherPath = guardChange(path, path);
        // libfuse makes regular files through create(), so only special files arrive here.
        if ((mode & S_IFMT) === S_IFREG) throw Object.assign(new Error('regular files are made by create'), { code: 'EINVAL' });
        await newEntry(cipherPath, () => makeSpecial(cipherPath, mode, dev, caller));
      });
    },

    // Extended attributes live on the cipher inode, in the user namespace only (as gocryptfs
    // does): security.* and system.* (capabilities, ACLs) would be stored but not enforced by this
    // mount, and trusted.* is the daemon's. With encrypted names, names and values are sealed
    // (volume.xattrs). Without the addon, ENOSYS (not the EPERM fuse-native answers for a missing
    // handler) makes the kernel stop asking at once.
    getxattr(path, name, _position, cb) {
      if (!sys) return cb(Errno.ENOSYS);
      if (!isUserAttr(name) || isMangled(name)) return cb(Errno.ENODATA);
      run('getxattr', path, cb, () => {
        const stored = dir.at(visible(path), (e) => sys.lgetxattr(e, xattrs.nameToFind(name)));
        return xattrs.sealed ? xattrs.openValue(stored, path, name) : stored;
      });
    },
    listxattr(path, cb) {
      if (!sys) return cb(Errno.ENOSYS);
      run('listxattr', path, cb, () => {
        const cipherPath = visible(path);
        const listing = xattrs.list(splitNames(dir.at(cipherPath, (e) => sys.llistxattr(e))));
        reportRefused('listxattr', path, cipherPath, ['attribute', 'attributes'], listing.refused);
        return listing.names;
      });
    },
    setxattr(path, name, value, _position, flags, cb) {
      if (!sys) return cb(Errno.ENOSYS);
      run('setxattr', path, cb, async () => {
        const cipherPath = guardChange(path, path);
        if (!isUserAttr(name)) throw Object.assign(new Error(`${name}: only user.* attributes are kept`), { code: 'EOPNOTSUPP' });
        if (isMangled(name)) throw Object.assign(new Error('attribute names must be UTF-8'), { code: 'EINVAL' });
        const stored = xattrs.nameToSet(name);
        const sealed = await xattrs.sealValue(value);
        dir.at(cipherPath, (e) => sys.lsetxattr(e, stored, sealed, flags));
      });
    },
    removexattr(path, name, cb) {
      if (!sys) return cb(Errno.ENOSYS);
      run('removexattr', path, cb, () => {
        const cipherPath = guardChange(path, path);
        if (!isUserAttr(name) || isMangled(name)) throw Object.assign(new Error(`${name}: no such attribute`), { code: 'ENODATA' });
        dir.at(cipherPath, (e) => sys.lremovexattr(e, xattrs.nameToFind(name)));
      });
    },

    chmod(path, mode, cb) {
      run('chmod', path, cb, () => dir.chmod(guardChange(path, path), mode & 0o7777));
    },

    chown(path, uid, gid, cb) {
      run('chown', path, cb, () => dir.at(guardChange(path, path), (e) => fs.lchownSync(e, uid, gid)));
    },

    /**
     * Times arrive exact (FuseTimespec) and go to the cipher inode exact through the addon's
     * utimensat (never following a symlink). Without the addon, Node's lutimes: float seconds that
     * libuv truncates to MICROSECONDS (exact for |t| < 2^33 s, i.e. until year 2242); 'omit'
     * rewrites the current time (lstat, so also to the microsecond); 'now' is this process's
     * clock (ms); times go as numeric strings, as lutimes turns a negative NUMBER into "now".
     */
    utimens(path, atime, mtime, cb) {
      run('utimens', path, cb, async () => {
        const cipherPath = guardChange(path, path);
        if (atime === 'omit' && mtime === 'omit') return;
        // Seal unflushed writes of an open file first: sealing them later (at close) would write
        // the cipher file after its times were set, replacing the mtime a program (tar x, cp -p,
        // rsync) just set, and changing the ctime behind the kernel's cached attributes.
        const file = volume.find(cipherPath) ?? volume.find(cipherPath, dir.lstat(cipherPath));
        await file?.flush();
        if (sys) {
          // Exact, and 'now' / 'omit' are the kernel's own UTIME_NOW / UTIME_OMIT.
          const sec = (t: typeof atime): number => (typeof t === 'string' ? 0 : Number(t.sec));
          const nsec = (t: typeof atime): number => (t === 'now' ? UTIME_NOW : t === 'omit' ? UTIME_OMIT : t.nsec);
          dir.at(cipherPath, (e) => sys.lutimens(e, sec(atime), nsec(atime), sec(mtime), nsec(mtime)));
          // Changes still in the journal go in place later: the mtime just set must survive that.
          file?.timesSet();
          return;
        }
        let current: fs.BigIntStats | undefined;
        const nowNs = BigInt(Date.now()) * 1_000_000n;
        const seconds = (t: typeof atime, which: 'atimeNs' | 'mtimeNs'): string => {
          let ns: bigint;
          if (t === 'now') ns = nowNs;
          else if (t === 'omit') ns = (current ??= dir.lstat(cipherPath, { bigint: true }))[which];
          else ns = t.sec * 1_000_000_000n + BigInt(t.nsec);
          // libuv computes tv_nsec from the double and truncates toward zero to whole µs: aim half
          // a µs past the wanted µs (away from zero) so the double's rounding cannot drop one.
          const us = ns >= 0n ? ns / 1000n : -((-ns + 999n) / 1000n);
          const target = us * 1000n + (us >= 0n ? 500n : -500n);
          const abs = target < 0n ? -target : target;
          return `${target < 0n ? '-' : ''}${abs / 1_000_000_000n}.${String(abs % 1_000_000_000n).padStart(9, '0')}`;
        };
        const [a, m] = [seconds(atime, 'atimeNs'), seconds(mtime, 'mtimeNs')];
        dir.at(cipherPath, (e) => fs.lutimesSync(e, a, m));
        file?.timesSet();
      });
    },
  };
}

/**
 * Node has no mkfifo: mkfifo(1) from coreutils does it (no secret in its argv), run in the
 * confined parent directory itself (our descriptor of it, seen through /proc/PID/fd) and given
 * one name, so it cannot be led elsewhere.
 */
function mkfifo(dir: CipherDir, cipherPath: string, mode: number): Promise<void> {
  const parent = dir.open(nodePath.dirname(cipherPath), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const name = nodePath.basename(cipherPath);
  return new Promise<void>((resolve, reject) => {
    execFile('mkfifo', ['-m', mode.toString(8), '--', name], { cwd: `/proc/${process.pid}/fd/${parent}` }, (err) => {
      if (!err) return resolve();
      let exists = false;
      try {
        dir.lstat(cipherPath);
        exists = true;
      } catch {
        // not made
      }
      reject(Object.assign(new Error(`mkfifo ${cipherPath} failed`), { code: exists ? 'EEXIST' : 'EIO' }));
    });
  }).finally(() => fs.closeSync(parent));
}
