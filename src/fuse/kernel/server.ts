/**
 * The FUSE session: kernel requests in, replies out. It keeps what the protocol needs (node IDs
 * and their lookup counts, open handles' paths, directory listings being read, what INIT
 * granted) and answers each request through the same path-based `FuseOperations` the
 * fuse-native transport drives, so both transports serve one filesystem.
 *
 * The protocol itself (struct layouts) lives in ./protocol; the device and the mount in
 * ./channel; the mount lifecycle in ./mount. Nothing here does I/O but `sink.write`.
 */
import { nameBytes, nameText } from '../../store';
import { Errno, FuseCaller, FuseOperations, FuseStat, FuseStatfs, FuseTime, FuseTimespec } from '../native-types';
import { NodeTable, ROOT_ID } from './nodes';
import * as P from './protocol';

export interface ReplySink {
  /** Writes one reply (one write(2)); returns 0 or a negative errno. */
  write(buffers: Buffer[]): number;
}

export interface SessionSettings {
  /** Seconds the kernel may cache attributes, names, and failed lookups. */
  attrTimeout: number;
  entryTimeout: number;
  negativeTimeout: number;
  /** Largest WRITE (and READ) request, bytes; a multiple of 4096, at most 1 MiB. */
  maxWrite: number;
  /** Let the kernel cache writes (FUSE_WRITEBACK_CACHE). */
  writebackCache: boolean;
  readOnly: boolean;
}

export const DEFAULT_SESSION: SessionSettings = {
  attrTimeout: 1,
  entryTimeout: 1,
  negativeTimeout: 1,
  maxWrite: 1 << 20,
  writebackCache: false,
  readOnly: false,
};

export interface SessionEvents {
  /** INIT was answered: the mount is usable. */
  onInit?: (granted: { minor: number; flags: number; maxWrite: number }) => void;
  /** A request the session could not decode, or a handler that threw. */
  onProblem?: (message: string) => void;
  /** DESTROY arrived (the kernel is done with us). */
  onDestroy?: () => void;
}

/**
 * Thrown inside a handler to answer with that errno. Not an Error: ENOENT for every lookup of a
 * name that is not there is ordinary, and capturing a stack trace for each cost more than the
 * lookup itself.
 */
class Reply {
  constructor(readonly errno: number) {}
}

const S_IFMT = 0o170000;
/** What libfuse reports as d_ino when it does not know the inode (FUSE_UNKNOWN_INO). */
const UNKNOWN_INO = 0xffffffff;
/** READ buffers: as large as the largest request; a few kept for reuse. */
const READ_POOL_SIZE = 1 << 20;
const READ_POOL_KEEP = 4;
const S_IFDIR = 0o040000;
const O_ACCMODE = 3;

interface DirHandle {
  path: string;
  /** Names as read at offset 0 ('.' and '..' first); reloaded when the kernel starts over. */
  names?: string[];
}

export class KernelSession {
  readonly nodes = new NodeTable();
  private minor = 0;
  private granted = 0;
  /** FUSE_SETXATTR_EXT is not asked for: setxattr requests keep the 8-byte header. */
  private readonly setxattrExt = false;
  private initialised = false;
  /** Open files: handle -> the path it was opened by. */
  private readonly fileHandles = new Map<number, string>();
  /** Node -> its open handles: how a file whose every name is gone is still reached (fstat). */
  private readonly nodeHandles = new Map<number, Set<number>>();
  private readonly dirHandles = new Map<number, DirHandle>();
  private readonly readBuffers: Buffer[] = [];
  private nextDirHandle = 1;
  /** Requests decoded, and those answered with an error. */
  readonly stats = { requests: 0, errors: 0 };

  constructor(
    private readonly ops: FuseOperations,
    private readonly sink: ReplySink,
    private readonly settings: SessionSettings = DEFAULT_SESSION,
    private readonly events: SessionEvents = {},
  ) {}

  /** Serves one request read from /dev/fuse. */
  handle(buf: Buffer): void {
    let req: P.Request;
    try {
      req = P.decodeRequest(buf, { minor: this.minor, setxattrExt: this.setxattrExt });
    } catch (err) {
      this.events.onProblem?.(`undecodable FUSE request: ${err instanceof Error ? err.message : String(err)}`);
      // Answered, so that the process waiting on it gets an error instead of hanging.
      if (err instanceof P.ProtocolError && err.unique !== undefined && err.unique !== 0 && P.expectsReply(err.opcode ?? 0)) {
        this.send([P.replyError(err.unique, Errno.EIO)]);
      }
      return;
    }
    this.stats.requests++;
    const unique = req.h.unique;
    let result: Buffer[] | undefined | Promise<Buffer[] | undefined>;
    try {
      result = this.dispatch(req);
    } catch (err) {
      this.answerError(unique, req, err);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (r) => r && this.send(r),
        (err: unknown) => this.answerError(unique, req, err),
      );
    } else if (result) {
      this.send(result);
    }
  }

  private answerError(unique: number, req: P.Request, err: unknown): void {
    this.stats.errors++;
    let errno: number;
    if (err instanceof Reply) errno = err.errno;
    else if (typeof err === 'object' && err !== null && (err as { code?: string }).code === 'ESTALE') errno = Errno.ESTALE;
    else {
      errno = Errno.EIO;
      this.events.onProblem?.(`FUSE ${P.opName(req.h.opcode)}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    }
    this.send([P.replyError(unique, errno)]);
  }

  private send(buffers: Buffer[]): void {
    const r = this.sink.write(buffers);
    // ENOENT: the request was interrupted and is gone; anything else is worth a line.
    if (r < 0 && r !== Errno.ENOENT) this.events.onProblem?.(`writing a FUSE reply failed: errno ${r}`);
  }

  // -------------------------------------------------------------------------------------------

  private dispatch(req: P.Request): Buffer[] | undefined | Promise<Buffer[] | undefined> {
    const { h } = req;
    const o = this.ops;
    if (!this.initialised && req.kind !== 'init') return [P.replyError(h.unique, Errno.EIO)];
    switch (req.kind) {
      case 'init':
        return this.init(req);
      case 'destroy':
        this.events.onDestroy?.();
        return P.replyOk(h.unique);
      case 'forget':
        this.nodes.forget(h.nodeid, req.nlookup);
        return undefined;
      case 'batchForget':
        for (const item of req.items) this.nodes.forget(item.nodeid, item.nlookup);
        return undefined;
      case 'interrupt':
        // Every operation here either finishes quickly or must finish (a write, a sync): the
        // interrupted request is answered when it is done, as the kernel allows.
        return undefined;
      case 'lookup':
        return this.lookup(h, req.name);
      case 'getattr':
        return this.getattr(h, req.fh);
      case 'setattr':
        return this.setattr(h, req);
      case 'readlink':
        return this.readlink(h);
      case 'symlink':
        return this.symlink(h, req.name, req.target);
      case 'mknod':
        return this.mknod(h, req.name, req.mode, req.rdev);
      case 'mkdir':
        return this.mkdir(h, req.name, req.mode);
      case 'unlink':
        return this.remove(h, req.name, 'unlink');
      case 'rmdir':
        return this.remove(h, req.name, 'rmdir');
      case 'rename':
        return this.rename(h, req.oldName, req.newdir, req.newName, req.flags);
      case 'link':
        return this.link(h, req.oldnodeid, req.name);
      case 'open':
        return this.open(h, req.flags);
      case 'create':
        return this.create(h, req.name, req.mode, req.flags);
      case 'read':
        return this.read(h, req.fh, req.offset, req.size);
      case 'write':
        return this.write(h, req.fh, req.offset, req.data);
      case 'statfs':
        return this.statfs(h);
      case 'release':
        return this.release(h, req.fh);
      case 'flush':
        return this.simple(h, o.flush && ((cb) => o.flush?.(this.filePath(req.fh, h), req.fh, cb)), 0);
      case 'fsync':
        return this.simple(h, o.fsync && ((cb) => o.fsync?.(this.filePath(req.fh, h), req.datasync ? 1 : 0, req.fh, cb)));
      case 'opendir':
        return this.opendir(h, req.flags);
      case 'readdir':
        return this.readdir(h, req.fh, req.offset, req.size, false);
      case 'readdirplus':
        return this.readdir(h, req.fh, req.offset, req.size, true);
      case 'releasedir':
        this.dirHandles.delete(req.fh);
        return this.simple(h, o.releasedir && ((cb) => o.releasedir?.('', req.fh, cb)), 0);
      case 'fsyncdir':
        return this.simple(h, o.fsyncdir && ((cb) => o.fsyncdir?.(this.nodes.path(h.nodeid), req.datasync ? 1 : 0, req.fh, cb)));
      case 'access':
        return this.simple(h, o.access && ((cb) => o.access?.(this.nodes.path(h.nodeid), req.mask, cb)), 0);
      case 'setxattr':
        return this.simple(h, o.setxattr && ((cb) => o.setxattr?.(this.nodes.path(h.nodeid), nameText(req.name), Buffer.from(req.value), 0, req.flags, cb)));
      case 'getxattr':
        return this.getxattr(h, req.name, req.size);
      case 'listxattr':
        return this.listxattr(h, req.size);
      case 'removexattr':
        return this.simple(h, o.removexattr && ((cb) => o.removexattr?.(this.nodes.path(h.nodeid), nameText(req.name), cb)));
      case 'fallocate':
        return this.simple(h, o.fallocate && ((cb) => o.fallocate?.(this.filePath(req.fh, h), req.fh, req.mode, req.offset, req.length, cb)), Errno.EOPNOTSUPP);
      case 'lseek':
        return this.lseek(h, req.fh, req.offset, req.whence);
      default:
        // STATX (the kernel falls back to GETATTR for good), locks (the kernel keeps them
        // locally without FUSE_POSIX_LOCKS), ioctl, poll, copy_file_range, tmpfile...
        return [P.replyError(h.unique, Errno.ENOSYS)];
    }
  }

  private init(req: Extract<P.Request, { kind: 'init' }>): Buffer[] {
    const s = this.settings;
    let flags = [
      P.FUSE_ASYNC_READ,
      P.FUSE_BIG_WRITES,
      P.FUSE_MAX_PAGES,
      P.FUSE_PARALLEL_DIROPS,
      P.FUSE_DO_READDIRPLUS,
      P.FUSE_READDIRPLUS_AUTO,
      P.FUSE_ASYNC_DIO,
    ].reduce(P.flagsOr, 0);
    // Not FUSE_AUTO_INVAL_DATA: every write through the mount moves the cipher file's mtime, and
    // the kernel would then drop the pages it holds of that very file at the next attribute
    // refresh (sqlite's page reads 2.5× slower). The page cache is dropped at each open instead
    // (no FOPEN_KEEP_CACHE), as libfuse does by default.
    if (s.writebackCache) flags = P.flagsOr(flags, P.FUSE_WRITEBACK_CACHE);
    const result = P.negotiateInit(req, { maxWrite: s.maxWrite, maxBackground: 64, congestionThreshold: 48, timeGran: 1, flags });
    if ('error' in result) return [P.replyError(req.h.unique, result.error)];
    // A kernel with a newer major asks again with ours.
    if ('retry' in result) return [result.reply];
    this.minor = result.minor;
    this.granted = result.flags;
    this.initialised = true;
    this.events.onInit?.({ minor: result.minor, flags: result.flags, maxWrite: result.maxWrite });
    return [result.reply];
  }

  /** Whether INIT granted `flag`. */
  has(flag: number): boolean {
    return P.hasFlag(this.granted, flag);
  }

  // ------------------------------------------------------------------------------ helpers

  /** Calls operation `op` (ENOSYS when the filesystem does not offer it). */
  private call<T>(op: keyof FuseOperations, invoke: (cb: (err: number, value?: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (typeof this.ops[op] !== 'function') {
        reject(new Reply(Errno.ENOSYS));
        return;
      }
      invoke((err, value) => (err ? reject(new Reply(err)) : resolve(value as T)));
    });
  }

  /**
   * An operation answered with an empty reply or an errno. `fn` is undefined when the filesystem
   * does not offer it: then `missing` is the answer (0: nothing to do, as for flush).
   */
  private simple(h: P.RequestHeader, fn: ((cb: (err: number) => void) => void) | undefined, missing: number = Errno.ENOSYS): Promise<Buffer[]> {
    return new Promise<Buffer[]>((resolve, reject) => {
      const cb = (err: number): void => (err ? reject(new Reply(err)) : resolve(P.replyOk(h.unique)));
      if (fn) fn(cb);
      else cb(missing);
    });
  }

  /** Names cross the path-based operations as strings, losslessly (name-text.ts). */
  private name(name: Buffer): string {
    return nameText(name);
  }

  private filePath(fh: number, h: P.RequestHeader): string {
    const p = this.fileHandles.get(fh);
    if (p !== undefined) return p;
    try {
      return this.nodes.path(h.nodeid);
    } catch {
      return `(handle ${fh})`;
    }
  }

  private caller(h: P.RequestHeader): FuseCaller {
    return { uid: h.uid, gid: h.gid };
  }

  private async stat(path: string, fh?: number): Promise<FuseStat> {
    if (fh !== undefined && this.ops.fgetattr) return this.call<FuseStat>('fgetattr', (cb) => this.ops.fgetattr?.(path, fh, cb));
    return this.call<FuseStat>('getattr', (cb) => this.ops.getattr?.(path, cb));
  }

  private entry(nodeid: number, st: FuseStat): P.EntryOut {
    return { nodeid, generation: 0, entryValid: this.settings.entryTimeout, attrValid: this.settings.attrTimeout, attr: toAttr(st) };
  }

  /** Stats the new or found `name` in `parent`, counts the lookup, and answers with its entry. */
  private async entryReply(h: P.RequestHeader, parent: number, name: string): Promise<Buffer[]> {
    const st = await this.stat(this.nodes.childPath(parent, name));
    const nodeid = this.nodes.found(parent, name, st.dev ?? 0, st.ino ?? 0, st.mode);
    return P.replyOk(h.unique, P.encodeEntryOut(this.entry(nodeid, st), this.minor));
  }

  // ------------------------------------------------------------------------------ operations

  private async lookup(h: P.RequestHeader, rawName: Buffer): Promise<Buffer[]> {
    let name: string;
    try {
      name = this.name(rawName);
    } catch {
      return [P.replyError(h.unique, Errno.ENOENT)];
    }
    try {
      return await this.entryReply(h, h.nodeid, name);
    } catch (err) {
      if (err instanceof Reply && err.errno === Errno.ENOENT && this.settings.negativeTimeout > 0) {
        // A negative entry the kernel may cache: the next create of this name needs no LOOKUP.
        return P.replyOk(h.unique, P.encodeNegativeEntryOut(this.settings.negativeTimeout, this.minor));
      }
      throw err;
    }
  }

  private async getattr(h: P.RequestHeader, fh: number | undefined): Promise<Buffer[]> {
    let handle = fh !== undefined && this.fileHandles.has(fh) ? fh : undefined;
    let path: string;
    if (handle !== undefined) path = this.fileHandles.get(handle) as string;
    else {
      try {
        path = this.nodes.path(h.nodeid);
      } catch (err) {
        // fstat of a file unlinked while open comes without a handle: use one of the node's.
        handle = this.nodeHandles.get(h.nodeid)?.values().next().value;
        if (handle === undefined) throw err;
        path = this.fileHandles.get(handle) as string;
      }
    }
    const st = await this.stat(path, handle);
    return P.replyOk(h.unique, P.encodeAttrOut(this.settings.attrTimeout, toAttr(st), this.minor));
  }

  private opened(fh: number, nodeid: number, path: string): void {
    this.fileHandles.set(fh, path);
    let set = this.nodeHandles.get(nodeid);
    if (!set) this.nodeHandles.set(nodeid, (set = new Set()));
    set.add(fh);
  }

  private closedHandle(fh: number, nodeid: number): void {
    this.fileHandles.delete(fh);
    const set = this.nodeHandles.get(nodeid);
    set?.delete(fh);
    if (set?.size === 0) this.nodeHandles.delete(nodeid);
  }

  private async setattr(h: P.RequestHeader, req: Extract<P.Request, { kind: 'setattr' }>): Promise<Buffer[]> {
    const fh = req.fh !== undefined && this.fileHandles.has(req.fh) ? req.fh : undefined;
    // The node's name as it is now: a handle's path is where the file was opened, and a rename of
    // it or of a directory above may have given that path to another file since (fchmod, futimens
    // arrive with the handle). A file with no name left is reached by its handle alone.
    let path: string;
    try {
      path = this.nodes.path(h.nodeid);
    } catch (err) {
      if (fh === undefined) throw err;
      path = this.fileHandles.get(fh) as string;
    }
    const ops = this.ops;
    if (req.mode !== undefined) {
      const mode = req.mode;
      await this.call<void>('chmod', (cb) => ops.chmod?.(path, mode, cb));
    }
    if (req.uid !== undefined || req.gid !== undefined) {
      const uid = req.uid ?? -1;
      const gid = req.gid ?? -1;
      await this.call<void>('chown', (cb) => ops.chown?.(path, uid, gid, cb));
    }
    if (req.size !== undefined) {
      const size = req.size;
      if (fh !== undefined && ops.ftruncate) await this.call<void>('ftruncate', (cb) => ops.ftruncate?.(path, fh, size, cb));
      else await this.call<void>('truncate', (cb) => ops.truncate?.(path, size, cb));
    }
    const atime: FuseTimespec = req.atimeNow ? 'now' : req.atime ? { sec: BigInt(req.atime.sec), nsec: req.atime.nsec } : 'omit';
    const mtime: FuseTimespec = req.mtimeNow ? 'now' : req.mtime ? { sec: BigInt(req.mtime.sec), nsec: req.mtime.nsec } : 'omit';
    if (atime !== 'omit' || mtime !== 'omit') await this.call<void>('utimens', (cb) => ops.utimens?.(path, atime, mtime, cb));
    // Fresh attributes in the reply: what the kernel caches is what the cipher inode now says
    // (times changed by a truncate included).
    const st = await this.stat(path, fh);
    return P.replyOk(h.unique, P.encodeAttrOut(this.settings.attrTimeout, toAttr(st), this.minor));
  }

  private async readlink(h: P.RequestHeader): Promise<Buffer[]> {
    const path = this.nodes.path(h.nodeid);
    const target = await this.call<string>('readlink', (cb) => this.ops.readlink?.(path, cb));
    return P.replyOk(h.unique, nameBytes(target));
  }

  private async symlink(h: P.RequestHeader, rawName: Buffer, target: Buffer): Promise<Buffer[]> {
    const name = this.name(rawName);
    const path = this.nodes.childPath(h.nodeid, name);
    await this.call<void>('symlink', (cb) => this.ops.symlink?.(nameText(target), path, this.caller(h), cb));
    return this.entryReply(h, h.nodeid, name);
  }

  private async mknod(h: P.RequestHeader, rawName: Buffer, mode: number, rdev: number): Promise<Buffer[]> {
    const name = this.name(rawName);
    const path = this.nodes.childPath(h.nodeid, name);
    if ((mode & S_IFMT) === 0o100000 && this.ops.create && this.ops.release) {
      // mknod(2) of a regular file: made as create would make it, then closed.
      const fh = await this.call<number>('create', (cb) => this.ops.create?.(path, mode, this.caller(h), cb));
      await this.call<void>('release', (cb) => this.ops.release?.(path, fh, cb));
    } else {
      await this.call<void>('mknod', (cb) => this.ops.mknod?.(path, mode, rdev, this.caller(h), cb));
    }
    return this.entryReply(h, h.nodeid, name);
  }

  private async mkdir(h: P.RequestHeader, rawName: Buffer, mode: number): Promise<Buffer[]> {
    const name = this.name(rawName);
    const path = this.nodes.childPath(h.nodeid, name);
    await this.call<void>('mkdir', (cb) => this.ops.mkdir?.(path, mode | S_IFDIR, this.caller(h), cb));
    return this.entryReply(h, h.nodeid, name);
  }

  private async remove(h: P.RequestHeader, rawName: Buffer, op: 'unlink' | 'rmdir'): Promise<Buffer[]> {
    const name = this.name(rawName);
    const path = this.nodes.childPath(h.nodeid, name);
    await this.call<void>(op, (cb) => this.ops[op]?.(path, cb));
    this.nodes.removed(h.nodeid, name);
    return P.replyOk(h.unique);
  }

  private async rename(h: P.RequestHeader, rawOld: Buffer, newdir: number, rawNew: Buffer, flags: number): Promise<Buffer[]> {
    const oldName = this.name(rawOld);
    const newName = this.name(rawNew);
    const from = this.nodes.childPath(h.nodeid, oldName);
    const to = this.nodes.childPath(newdir, newName);
    if (flags === 0 || !this.ops.rename2) {
      if (flags !== 0) throw new Reply(Errno.EINVAL);
      if (this.ops.rename2) await this.call<void>('rename2', (cb) => this.ops.rename2?.(from, to, 0, cb));
      else await this.call<void>('rename', (cb) => this.ops.rename?.(from, to, cb));
    } else {
      await this.call<void>('rename2', (cb) => this.ops.rename2?.(from, to, flags, cb));
    }
    if (flags & P.RENAME_EXCHANGE) this.nodes.exchanged(h.nodeid, oldName, newdir, newName);
    else this.nodes.renamed(h.nodeid, oldName, newdir, newName);
    return P.replyOk(h.unique);
  }

  private async link(h: P.RequestHeader, oldnodeid: number, rawName: Buffer): Promise<Buffer[]> {
    const name = this.name(rawName);
    const existing = this.nodes.path(oldnodeid);
    const path = this.nodes.childPath(h.nodeid, name);
    await this.call<void>('link', (cb) => this.ops.link?.(existing, path, cb));
    return this.entryReply(h, h.nodeid, name);
  }

  private async open(h: P.RequestHeader, flags: number): Promise<Buffer[]> {
    const path = this.nodes.path(h.nodeid);
    if (this.settings.readOnly && (flags & O_ACCMODE) !== 0) throw new Reply(Errno.EROFS);
    const fh = await this.call<number>('open', (cb) => this.ops.open?.(path, flags, cb));
    this.opened(fh, h.nodeid, path);
    return P.replyOk(h.unique, P.encodeOpenOut(fh, 0));
  }

  private async create(h: P.RequestHeader, rawName: Buffer, mode: number, _flags: number): Promise<Buffer[]> {
    const name = this.name(rawName);
    const path = this.nodes.childPath(h.nodeid, name);
    const fh = await this.call<number>('create', (cb) => this.ops.create?.(path, mode, this.caller(h), cb));
    this.fileHandles.set(fh, path);
    let st: FuseStat;
    try {
      st = await this.stat(path, fh);
    } catch (err) {
      // The kernel will not release a handle it never got.
      await this.call<void>('release', (cb) => this.ops.release?.(path, fh, cb)).catch(() => undefined);
      this.fileHandles.delete(fh);
      throw err;
    }
    const nodeid = this.nodes.found(h.nodeid, name, st.dev ?? 0, st.ino ?? 0, st.mode);
    this.opened(fh, nodeid, path);
    return P.replyOk(h.unique, [P.encodeEntryOut(this.entry(nodeid, st), this.minor), P.encodeOpenOut(fh, 0)]);
  }

  /**
   * READ into a buffer from a small pool: the reply is written (copied into the kernel) before
   * the buffer goes back, so a stream of 1 MiB reads reuses a few buffers instead of leaving one
   * per request to the garbage collector.
   */
  private read(h: P.RequestHeader, fh: number, offset: number, size: number): Promise<undefined> {
    const buffer = this.readBuffers.pop() ?? Buffer.allocUnsafeSlow(Math.max(size, READ_POOL_SIZE));
    const path = this.filePath(fh, h);
    const giveBack = (): void => {
      if (buffer.length >= READ_POOL_SIZE && this.readBuffers.length < READ_POOL_KEEP) this.readBuffers.push(buffer);
    };
    return new Promise<undefined>((resolve, reject) => {
      const read = this.ops.read;
      if (!read) return reject(new Reply(Errno.ENOSYS));
      read(path, fh, buffer.subarray(0, size), size, offset, (n) => {
        if (n < 0) {
          giveBack();
          reject(new Reply(n));
          return;
        }
        this.send(P.replyOk(h.unique, buffer.subarray(0, n)));
        giveBack();
        resolve(undefined);
      });
    });
  }

  private write(h: P.RequestHeader, fh: number, offset: number, data: Buffer): Promise<Buffer[]> {
    const path = this.filePath(fh, h);
    return new Promise<Buffer[]>((resolve, reject) => {
      if (!this.ops.write) return reject(new Reply(Errno.ENOSYS));
      this.ops.write(path, fh, data, data.length, offset, (n) => (n < 0 ? reject(new Reply(n)) : resolve(P.replyOk(h.unique, P.encodeWriteOut(n)))));
    });
  }

  private async statfs(h: P.RequestHeader): Promise<Buffer[]> {
    const s = await this.call<FuseStatfs>('statfs', (cb) => this.ops.statfs?.('/', cb));
    return P.replyOk(
      h.unique,
      P.encodeStatfsOut({
        blocks: s.blocks ?? 0,
        bfree: s.bfree ?? 0,
        bavail: s.bavail ?? 0,
        files: s.files ?? 0,
        ffree: s.ffree ?? 0,
        bsize: s.bsize ?? 4096,
        namelen: s.namemax ?? 255,
        frsize: s.frsize ?? s.bsize ?? 4096,
      }),
    );
  }

  private async release(h: P.RequestHeader, fh: number): Promise<Buffer[]> {
    const path = this.filePath(fh, h);
    try {
      await this.call<void>('release', (cb) => this.ops.release?.(path, fh, cb));
    } finally {
      this.closedHandle(fh, h.nodeid);
    }
    return P.replyOk(h.unique);
  }

  private async opendir(h: P.RequestHeader, flags: number): Promise<Buffer[]> {
    const path = this.nodes.path(h.nodeid);
    if (this.ops.opendir) await this.call<number>('opendir', (cb) => this.ops.opendir?.(path, flags, cb));
    while (this.dirHandles.has(this.nextDirHandle) || this.nextDirHandle === 0) this.nextDirHandle = (this.nextDirHandle + 1) % 2 ** 32;
    const fh = this.nextDirHandle++;
    this.dirHandles.set(fh, { path });
    return P.replyOk(h.unique, P.encodeOpenOut(fh, 0));
  }

  private async readdir(h: P.RequestHeader, fh: number, offset: number, size: number, plus: boolean): Promise<Buffer[]> {
    const dir = this.dirHandles.get(fh);
    if (!dir) throw new Reply(Errno.EBADF);
    if (offset === 0 || !dir.names) {
      dir.names = await new Promise<string[]>((resolve, reject) => {
        if (!this.ops.readdir) return reject(new Reply(Errno.ENOSYS));
        this.ops.readdir(dir.path, (err, names) => (err ? reject(new Reply(err)) : resolve(names ?? [])));
      });
    }
    const names = dir.names;
    const out = new P.DirentWriter(size, this.minor);
    for (let i = offset; i < names.length; i++) {
      const name = names[i];
      const raw = nameBytes(name);
      if (!plus || name === '.' || name === '..') {
        const type = name === '.' || name === '..' ? P.DT_DIR : P.DT_UNKNOWN;
        const ok = plus ? out.addPlus(null, i + 1, type, raw, UNKNOWN_INO) : out.add(UNKNOWN_INO, i + 1, type, raw);
        if (!ok) break;
        continue;
      }
      let st: FuseStat | undefined;
      try {
        st = await this.stat(dir.path === '/' ? '/' + name : dir.path + '/' + name);
      } catch {
        // Gone since the listing, or not readable: listed without attributes.
      }
      if (!st) {
        if (!out.addPlus(null, i + 1, P.DT_UNKNOWN, raw, UNKNOWN_INO)) break;
        continue;
      }
      const dirNode = h.nodeid;
      const nodeid = this.nodes.found(dirNode, name, st.dev ?? 0, st.ino ?? 0, st.mode);
      if (!out.addPlus(this.entry(nodeid, st), i + 1, P.modeToDirentType(st.mode), raw)) {
        this.nodes.forget(nodeid, 1);
        break;
      }
    }
    return P.replyOk(h.unique, out.finish());
  }

  private async getxattr(h: P.RequestHeader, rawName: Buffer, size: number): Promise<Buffer[]> {
    const path = this.nodes.path(h.nodeid);
    const value = await this.call<Buffer | null>('getxattr', (cb) => this.ops.getxattr?.(path, nameText(rawName), 0, cb));
    if (!value) throw new Reply(Errno.ENODATA);
    if (size === 0) return P.replyOk(h.unique, P.encodeXattrSize(value.length));
    if (value.length > size) throw new Reply(Errno.ERANGE);
    return P.replyOk(h.unique, value);
  }

  private async listxattr(h: P.RequestHeader, size: number): Promise<Buffer[]> {
    const path = this.nodes.path(h.nodeid);
    const names = await this.call<string[]>('listxattr', (cb) => this.ops.listxattr?.(path, cb));
    const list = Buffer.concat(names.map((n) => nameBytes(n + '\0')));
    if (size === 0) return P.replyOk(h.unique, P.encodeXattrSize(list.length));
    if (list.length > size) throw new Reply(Errno.ERANGE);
    return P.replyOk(h.unique, list);
  }

  private async lseek(h: P.RequestHeader, fh: number, offset: number, whence: number): Promise<Buffer[]> {
    const at = await this.call<number>('lseek', (cb) => this.ops.lseek?.(this.filePath(fh, h), fh, offset, whence, cb));
    return P.replyOk(h.unique, P.encodeLseekOut(at));
  }
}

/** FuseStat (as the operations answer) to the kernel's fuse_attr. */
export function toAttr(st: FuseStat): P.Attr {
  const [atime, atimensec] = splitTime(st.atime);
  const [mtime, mtimensec] = splitTime(st.mtime);
  const [ctime, ctimensec] = splitTime(st.ctime);
  return {
    ino: st.ino ?? 0,
    size: st.size ?? 0,
    blocks: st.blocks ?? 0,
    atime,
    atimensec,
    mtime,
    mtimensec,
    ctime,
    ctimensec,
    mode: st.mode,
    nlink: st.nlink ?? 1,
    uid: st.uid ?? 0,
    gid: st.gid ?? 0,
    rdev: (st.rdev ?? 0) >>> 0,
    blksize: st.blksize ?? 4096,
  };
}

function splitTime(t: FuseTime | undefined): [number, number] {
  if (t === undefined) return [0, 0];
  const ns = typeof t === 'bigint' ? t : BigInt(Math.round((typeof t === 'number' ? t : t.getTime()) * 1e6));
  let sec = ns / 1_000_000_000n;
  if (sec * 1_000_000_000n > ns) sec -= 1n;
  return [Number(sec), Number(ns - sec * 1_000_000_000n)];
}

export { ROOT_ID };
