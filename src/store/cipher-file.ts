import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Cipher,
  DareError,
  HEADER_SIZE,
  MAX_PACKAGE,
  MAX_PAYLOAD,
  PREFIX_SIZE,
  Version,
  cipherSize,
  openPackage,
  packageCount,
  packageIndex,
  packageOffset,
  payloadLength,
  plaintextSize,
  randomNonce,
  sealPackage,
  verifyHeader,
} from '../dare';
import { FALLOC_FL_KEEP_SIZE, loadSysCalls } from '../sys';
import type { CipherDir } from './cipher-dir';
import { ClosedFileError, ReadOnlyError, ShortCipherFileError } from './errors';
import * as io from './io';
import type { Journal, JournalEntry } from './journal';
import { Mutex } from './mutex';
import { PackageCache } from './package-cache';

/** Gives the key of a stream from its prefix; the caller owns (and zeroes) the returned buffer. */
export interface KeySource {
  key(prefix: Buffer): Promise<Buffer>;
}

export interface StoreSettings {
  /** DARE version of new files. 1.0 allows re-sealing single packages in place. */
  newFileVersion: Version;
  newFileCipher: Cipher;
  /**
   * With 1.0 as newFileVersion: the first change to an existing 2.0 file rewrites it as a new
   * 1.0 stream (FORMAT.md §5). Otherwise 2.0 files stay 2.0 and every flush rewrites the stream.
   */
  convert2to1: boolean;
}

/** Bytes of unsealed plaintext held across all files of a volume. */
export class DirtyBudget {
  bytes = 0;
  constructor(readonly maxBytes: number) {}
  get exceeded(): boolean {
    return this.bytes > this.maxBytes;
  }
}

/**
 * The volume's side of group commit. A flush puts a file's sealed packages in the journal (not
 * synced) and keeps them ("pinned") until a checkpoint syncs the journal once for every file,
 * writes them in place, syncs the files and retires the journal.
 */
export interface Checkpointer {
  /** `file` pinned `bytes` more (negative: fewer): it takes part in the next checkpoint. */
  pinned(file: CipherFile, bytes: number): void;
  /** The checkpoint itself (synchronous: no request runs in between). */
  checkpoint(): void;
  /** A full disk: checkpoints and gives back the journal's space past its reserve. */
  reclaim(): void;
  /** Flushes other files' unsealed changes while the dirty budget is exceeded. */
  relieve(): Promise<void>;
}

export interface FileContext {
  /** Every access to the cipher directory goes through it (confined: FORMAT.md §6). */
  dir: CipherDir;
  keys: KeySource;
  cache: PackageCache;
  settings: StoreSettings;
  dirty: DirtyBudget;
  readOnly: boolean;
  /** Counters for status and benchmarks. */
  counters: StoreCounters;
  /** Redo journal of in-place package rewrites; without it a crash can tear a package. */
  journal?: Journal;
  /** With the journal: the checkpoints (the volume). */
  checkpointer?: Checkpointer;
}

export interface StoreCounters {
  packagesOpened: number;
  packagesSealed: number;
  authFailures: number;
  rewrites: number;
}

// Writes at most this many packages per writev: IOV_MAX is 1024 on Linux.
const MAX_IOV_PACKAGES = 256;

/**
 * Packages sealed per batch where a hole (a write far past the end, a growing truncate) or a
 * stream rewrite is written straight to disk: 4 MiB, after which the event loop serves other
 * requests before the next batch. A hole of fewer whole packages goes through the dirty map.
 */
export const ZERO_BATCH = 64;

/**
 * One package of zeros, the plaintext of every zero package of a hole (each sealed under its own
 * fresh random nonce). Read only: it never enters the dirty map or the package cache.
 */
const ZEROS = Buffer.alloc(MAX_PAYLOAD);

let nextFileId = 1;

/**
 * One encrypted file as a random-access object: reads decrypt only the packages they cover,
 * writes change packages in memory, and flush re-seals only the changed packages, each under a
 * fresh random nonce, so no (key, nonce) pair ever seals two plaintexts (FORMAT.md §5).
 *
 * Invariant: every package index below packageCount(size) that is not dirty is on disk with
 * exactly payloadLength(index, size) bytes of plaintext.
 */
export class CipherFile {
  readonly id = nextFileId++;
  /** Plaintext size, including unflushed changes. */
  size: number;
  /** Handles open on this object (maintained by the volume). */
  refs = 0;
  /** The name was unlinked while open: a stream rewrite must not rename over the path. */
  unlinked = false;

  /**
   * The mtime (ns) the cipher file must show once the checkpoint has written its pinned packages
   * in place: the time its changes were accepted, or the one a utimens gave it since. Writing in
   * place later would otherwise move it to the checkpoint's time (make, rsync, tar and cp -p
   * compare mtimes).
   */
  private keptMtimeNs: bigint | undefined;

  /** The cipher inode's attributes through the open descriptor: right also once the name is gone. */
  stat(): fs.BigIntStats {
    if (this.closed) throw new ClosedFileError(this.name);
    return fs.fstatSync(this.fd, { bigint: true });
  }

  private readonly lock = new Mutex();
  private readonly dirty = new Map<number, Buffer>();
  private readonly cachedIndexes = new Set<number>();
  /** Plaintext size the stream on disk holds. */
  private diskSize: number;
  private dirNeedsSync = false;
  private closed = false;
  /** Cached by streamPrefix(); forgotten when a rewrite gives the stream a new prefix. */
  private prefix: Buffer | undefined;
  /** False for a 0-byte cipher file until its first flush with content writes `prefix`. */
  private prefixOnDisk = true;
  /**
   * Sealed packages in the journal that the next checkpoint writes in place, and the cipher size
   * it leaves (undefined: nothing pending). Reads take these over what the disk holds.
   */
  private readonly pinned = new Map<number, Buffer>();
  private pinnedCipherSize: number | undefined;
  /** A flush for the dirty budget that another file's write asked for failed: see flushForBudget(). */
  private deferredError: unknown;

  private constructor(
    /** Cipher file path; the volume updates it on rename. */
    public cipherPath: string,
    /** Name for messages (plaintext-relative path). */
    public name: string,
    private fd: number,
    /** Why `fd` is read-only (the errno code of the refused read-write open); undefined: writable. */
    private readonly writeRefusal: string | undefined,
    private key: Buffer,
    private version: Version,
    private cipher: Cipher,
    /** Header of package 0, the reference for random access; undefined while empty. */
    private reference: Buffer | undefined,
    size: number,
    private readonly ctx: FileContext,
  ) {
    this.size = size;
    this.diskSize = size;
  }

  /** Opens an existing cipher file, checking package 0's and the last package's headers. */
  static async open(cipherPath: string, name: string, ctx: FileContext): Promise<CipherFile> {
    let fd: number;
    let writeRefusal: string | undefined = ctx.readOnly ? 'EROFS' : undefined;
    try {
      fd = ctx.dir.openFile(cipherPath, writeRefusal === undefined ? fs.constants.O_RDWR : fs.constants.O_RDONLY);
    } catch (err) {
      if (writeRefusal !== undefined || !isErrno(err, 'EACCES', 'EPERM', 'EROFS')) throw err;
      writeRefusal = (err as NodeJS.ErrnoException).code;
      fd = ctx.dir.openFile(cipherPath, fs.constants.O_RDONLY);
    }
    try {
      const { size: fileSize } = fs.fstatSync(fd);
      // No byte at all: a file whose creation a crash cut short before its prefix reached the
      // disk (or made by hand). It is an empty file; its first write gives it a prefix.
      if (fileSize === 0) {
        const prefix = crypto.randomBytes(PREFIX_SIZE);
        const key = await ctx.keys.key(prefix);
        const file = new CipherFile(cipherPath, name, fd, writeRefusal, key, ctx.settings.newFileVersion, ctx.settings.newFileCipher, undefined, 0, ctx);
        file.prefix = prefix;
        file.prefixOnDisk = false;
        return file;
      }
      if (fileSize < PREFIX_SIZE) throw new ShortCipherFileError(name, fileSize);
      const size = plaintextSize(fileSize);
      const head = Buffer.alloc(PREFIX_SIZE + HEADER_SIZE);
      fs.readSync(fd, head, 0, Math.min(head.length, fileSize), 0);
      const prefix = head.subarray(0, PREFIX_SIZE);
      let version = ctx.settings.newFileVersion;
      let cipher = ctx.settings.newFileCipher;
      let reference: Buffer | undefined;
      if (size > 0) {
        reference = Buffer.from(head.subarray(PREFIX_SIZE));
        const count = packageCount(size);
        verifyHeader(reference, { index: 0, payloadLength: payloadLength(0, size), last: count === 1, reference });
        if (count > 1) {
          const last = Buffer.alloc(HEADER_SIZE);
          fs.readSync(fd, last, 0, HEADER_SIZE, packageOffset(count - 1));
          verifyHeader(last, { index: count - 1, payloadLength: payloadLength(count - 1, size), last: true, reference });
        }
        version = reference[0] as Version;
        cipher = reference[1] as Cipher;
      }
      const key = await ctx.keys.key(Buffer.from(prefix));
      return new CipherFile(cipherPath, name, fd, writeRefusal, key, version, cipher, reference, size, ctx);
    } catch (err) {
      fs.closeSync(fd);
      if (err instanceof DareError) err.inFile(name);
      throw err;
    }
  }

  /**
   * Creates a new empty stream (the prefix alone) at a path that must not exist. The prefix is
   * written to a temporary name first and then linked to the real name (which fails with EEXIST
   * as O_EXCL would), so a crash never leaves a name holding less than a prefix. The temporary
   * name is removed; the descriptor stays on the same inode. Nothing is synced: the
   * application's fsync syncs the file and, through dirNeedsSync, its directory. `prepare` gets
   * the new inode's descriptor before it has its name (to set owner and mode: the name never
   * shows anything else).
   */
  static async create(cipherPath: string, name: string, mode: number, ctx: FileContext, prepare?: (fd: number) => void): Promise<CipherFile> {
    if (ctx.readOnly) throw new ReadOnlyError(name);
    const prefix = crypto.randomBytes(PREFIX_SIZE);
    // Derive before creating, so a failure leaves no file behind.
    const key = await ctx.keys.key(prefix);
    const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL;
    const tmp = path.join(path.dirname(cipherPath), `${TEMP_PREFIX}${crypto.randomBytes(8).toString('hex')}`);
    const dir = ctx.dir;
    const openNew = (file: string, fl: number, m: number): number => dir.openFile(file, fl, m);
    let fd: number;
    let linked = false;
    try {
      fd = io.createSync(tmp, flags, mode, openNew);
      try {
        writeFully(fd, prefix, 0, tmp);
        prepare?.(fd);
        try {
          dir.at2(tmp, cipherPath, (from, to) => io.linkSync(from, to));
          linked = true;
        } catch (err) {
          // No hard links here (some network and FUSE file systems): create in place, as before.
          if (!isErrno(err, 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK')) throw err;
        }
      } catch (err) {
        fs.closeSync(fd);
        io.quietly(() => dir.at(tmp, io.removeSync));
        throw err;
      }
      if (linked) {
        try {
          dir.at(tmp, io.unlinkSync);
        } catch (err) {
          // The file exists under its name; a leftover temporary name is harmless (fsck removes it).
          if (err instanceof io.SimulatedCrash) {
            fs.closeSync(fd);
            throw err;
          }
        }
      } else {
        fs.closeSync(fd);
        io.quietly(() => dir.at(tmp, io.removeSync));
        fd = io.createSync(cipherPath, flags, mode, openNew);
        try {
          writeFully(fd, prefix, 0, cipherPath);
          prepare?.(fd);
        } catch (err) {
          fs.closeSync(fd);
          io.quietly(() => dir.at(cipherPath, io.removeSync));
          throw err;
        }
      }
    } catch (err) {
      key.fill(0);
      throw err;
    }
    const { newFileVersion, newFileCipher } = ctx.settings;
    const file = new CipherFile(cipherPath, name, fd, undefined, key, newFileVersion, newFileCipher, undefined, 0, ctx);
    file.dirNeedsSync = true;
    return file;
  }

  /** Reads plaintext [offset, offset + length), shorter at the end of the file. */
  read(offset: number, length: number): Promise<Buffer> {
    return this.lock.run(() => {
      const out = Buffer.allocUnsafe(Math.max(0, Math.min(this.size, offset + length) - offset));
      return out.subarray(0, this.readLocked(offset, out));
    });
  }

  /**
   * Reads plaintext at `offset` into `dest` (as much as fits, shorter at the end of the file);
   * resolves to the byte count. Saves the FUSE read path an intermediate buffer.
   */
  readInto(offset: number, dest: Buffer): Promise<number> {
    return this.lock.run(() => this.readLocked(offset, dest));
  }

  private readLocked(offset: number, dest: Buffer): number {
    this.assertOpen();
    const end = Math.min(this.size, offset + dest.length);
    if (end <= offset) return 0;
    this.withPackages(packageIndex(offset), packageIndex(end - 1), (index, plain) => {
      const start = index * MAX_PAYLOAD;
      const from = Math.max(offset, start);
      const to = Math.min(end, start + plain.length);
      plain.copy(dest, from - offset, from - start, to - start);
    });
    return end - offset;
  }

  /** Writes `data` at `offset`, filling any gap after the end with zeros. */
  async write(offset: number, data: Buffer): Promise<number> {
    const n = await this.lock.run(async () => {
      await this.prepareChange();
      if (data.length === 0) return 0;
      if (offset > this.size) await this.extendWithZeros(offset);
      const end = offset + data.length;
      const newSize = Math.max(this.size, end);
      for (let index = packageIndex(offset); index <= packageIndex(end - 1); index++) {
        const start = index * MAX_PAYLOAD;
        const from = Math.max(offset, start) - start;
        const to = Math.min(end, start + MAX_PAYLOAD) - start;
        const buf = this.packageForChange(index, payloadLength(index, newSize), from === 0 ? to : 0);
        data.copy(buf, from, from + start - offset, to + start - offset);
      }
      this.size = newSize;
      if (this.ctx.dirty.exceeded && !this.ctx.checkpointer) this.flushLocked();
      return data.length;
    });
    await this.relieveBudget();
    return n;
  }

  /**
   * Over the dirty budget (with the journal): every file holding unsealed changes is flushed,
   * this one first, not only this one: else another file's changes (a kept 2.0 stream's wait
   * for its next flush) would make every write of this one seal at once.
   */
  private async relieveBudget(): Promise<void> {
    if (this.ctx.dirty.exceeded && this.ctx.checkpointer) {
      await this.flush('none');
      await this.ctx.checkpointer.relieve();
    }
  }

  /**
   * A flush for the dirty budget, asked by another file's write: its failure is this file's,
   * reported by this file's next operation (as the kernel reports a failed writeback at the next
   * fsync), not the writer's.
   */
  async flushForBudget(): Promise<void> {
    try {
      await this.flush('none');
    } catch (err) {
      this.deferredError ??= err;
    }
  }

  /** Throws (once) what a flush for the dirty budget failed with. */
  private takeDeferredError(): void {
    const err = this.deferredError;
    if (err === undefined) return;
    this.deferredError = undefined;
    throw err;
  }

  /** Sets the plaintext size: shrinking drops the tail, growing appends zeros (no holes). */
  async truncate(newSize: number): Promise<void> {
    await this.lock.run(async () => {
      await this.prepareChange();
      if (newSize > this.size) {
        await this.extendWithZeros(newSize);
      } else if (newSize < this.size) {
        for (const index of [...this.dirty.keys()]) {
          if (index * MAX_PAYLOAD >= newSize) this.dropDirty(index);
        }
        if (newSize > 0) {
          const last = packageIndex(newSize - 1);
          const length = payloadLength(last, newSize);
          if (length !== payloadLength(last, this.size)) this.packageForChange(last, length, length);
        }
        this.size = newSize;
      }
      if (this.ctx.dirty.exceeded && !this.ctx.checkpointer) this.flushLocked();
    });
    await this.relieveBudget();
  }

  /** Seals and writes every change; with `sync`, also makes it durable. */
  flush(sync: 'none' | 'data' | 'full' = 'none'): Promise<void> {
    return this.lock.run(async () => {
      if (this.closed) return;
      this.takeDeferredError();
      await this.flushChanges();
      if (sync !== 'none') this.syncLocked(sync);
    });
  }

  /** Flushes, closes the descriptor and forgets the key and cached plaintext. */
  close(): Promise<void> {
    return this.lock.run(async () => {
      if (this.closed) return;
      try {
        await this.flushChanges();
        // The descriptor goes: what the journal holds for it is written in place first.
        if (this.pinnedCipherSize !== undefined) this.ctx.checkpointer?.checkpoint();
      } finally {
        this.closed = true;
        for (const index of [...this.dirty.keys()]) this.dropDirty(index);
        this.ctx.cache.dropFile(this.id, this.cachedIndexes);
        this.cachedIndexes.clear();
        this.key.fill(0);
        fs.closeSync(this.fd);
      }
    });
  }

  /**
   * Closes at once, without flushing (the volume's shutdown, after its last checkpoint): forgets
   * the key, the changes and the cached plaintext.
   */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    for (const index of [...this.dirty.keys()]) this.dropDirty(index);
    this.ctx.cache.dropFile(this.id, this.cachedIndexes);
    this.cachedIndexes.clear();
    this.clearPinned();
    this.key.fill(0);
    fs.closeSync(this.fd);
  }

  /** The next fsync also syncs the parent directory (after create or rename). */
  markNameChanged(): void {
    this.dirNeedsSync = true;
  }

  get streamVersion(): Version {
    return this.version;
  }

  get dirtyPackages(): number {
    return this.dirty.size;
  }

  /** Whether the journal holds packages of this file that are not in place yet. */
  get hasPinned(): boolean {
    return this.pinnedCipherSize !== undefined;
  }

  /**
   * Checkpoint, step 2 (after the journal sync): writes the pinned packages in place and sets
   * the size. The space was reserved when they were pinned.
   */
  writePinned(): NodeJS.ErrnoException | undefined {
    if (this.pinnedCipherSize === undefined || this.closed) return undefined;
    const indexes = [...this.pinned.keys()].sort((a, b) => a - b);
    let wrote = false;
    try {
      for (let i = 0; i < indexes.length; ) {
        let j = i;
        while (j + 1 < indexes.length && indexes[j + 1] === indexes[j] + 1 && j + 1 - i < MAX_IOV_PACKAGES) j++;
        writevFully(this.fd, indexes.slice(i, j + 1).map((index) => this.pinned.get(index)!), packageOffset(indexes[i]), this.cipherPath);
        wrote = true;
        i = j + 1;
      }
      if (fs.fstatSync(this.fd).size !== this.pinnedCipherSize) io.ftruncateSync(this.fd, this.pinnedCipherSize, this.cipherPath);
      if (this.keptMtimeNs !== undefined) restoreMtime(this.fd, this.keptMtimeNs);
    } catch (err) {
      // Refused before anything was written (made immutable since, say): the file is as it was,
      // and its records stay in the journal until a later checkpoint can write them.
      if (!wrote && isErrno(err, 'EPERM', 'EACCES', 'EROFS')) return err as NodeJS.ErrnoException;
      throw err;
    }
    return undefined;
  }

  /** Checkpoint, step 3: makes what writePinned() wrote durable. */
  syncPinned(): void {
    if (this.pinnedCipherSize === undefined || this.closed) return;
    io.fdatasyncSync(this.fd, this.cipherPath);
  }

  /** Checkpoint, last step (the journal retired): forgets the pinned packages; returns their bytes. */
  clearPinned(): number {
    let bytes = 0;
    for (const image of this.pinned.values()) bytes += image.length;
    this.pinned.clear();
    this.pinnedCipherSize = undefined;
    this.keptMtimeNs = undefined;
    return bytes;
  }

  // ---- internals; all run under the lock ----

  private assertOpen(): void {
    if (this.closed) throw new ClosedFileError(this.name);
  }

  private get keepsVersion20(): boolean {
    const { newFileVersion, convert2to1 } = this.ctx.settings;
    return this.version === Version.V20 && !(convert2to1 && newFileVersion === Version.V10);
  }

  /** Before any change: refuse on read-only, and convert a 2.0 stream to 1.0 once. */
  private async prepareChange(): Promise<void> {
    this.assertOpen();
    this.takeDeferredError();
    if (this.ctx.readOnly) throw new ReadOnlyError(this.name);
    // The errno of the refused read-write open (EACCES, EPERM for an immutable file, EROFS), as
    // ext4 would give it.
    if (this.writeRefusal !== undefined) throw errnoError(this.writeRefusal, `${this.name}: cipher file is not writable`);
    if (this.version === Version.V20 && !this.keepsVersion20) {
      if (this.reference === undefined) this.version = Version.V10;
      else await this.rewriteStream(Version.V10);
    }
  }

  /**
   * Calls `fn` for each package in [first, last] in order: dirty ones from memory, cached ones
   * from the cache, the rest read from disk in one read per contiguous run and verified.
   */
  private withPackages(first: number, last: number, fn: (index: number, plain: Buffer) => void): void {
    let index = first;
    while (index <= last) {
      const held = this.dirty.get(index) ?? this.ctx.cache.get(this.id, index);
      if (held !== undefined) {
        fn(index, held);
        index++;
        continue;
      }
      let runEnd = index;
      while (runEnd < last && !this.dirty.has(runEnd + 1) && runEnd + 1 - index < MAX_IOV_PACKAGES) runEnd++;
      this.loadFromDisk(index, runEnd, fn);
      index = runEnd + 1;
    }
  }

  /**
   * Opens packages [first, last] from disk and hands each to `fn` before caching it: caching
   * may evict (and so zero) packages loaded earlier in the same run.
   */
  private loadFromDisk(first: number, last: number, fn: (index: number, plain: Buffer) => void): void {
    const size = this.diskSize;
    const start = packageOffset(first);
    const end = Math.min(packageOffset(last + 1), cipherSize(size));
    // Ciphertext only lives until it is opened: one scratch buffer serves every read.
    const raw = scratch(end - start);
    const got = fs.readSync(this.fd, raw, 0, raw.length, start);
    const count = packageCount(size);
    for (let index = first; index <= last; index++) {
      const length = payloadLength(index, size);
      const at = packageOffset(index) - start;
      const pkg = this.pinned.get(index) ?? raw.subarray(at, Math.max(at, Math.min(got, at + length + 32)));
      let plain: Buffer;
      try {
        plain = openPackage(this.key, pkg, { index, payloadLength: length, last: index === count - 1, reference: this.reference! });
      } catch (err) {
        if (err instanceof DareError) {
          this.ctx.counters.authFailures++;
          err.inFile(this.name);
        }
        throw err;
      }
      this.ctx.counters.packagesOpened++;
      fn(index, plain);
      this.ctx.cache.set(this.id, index, plain);
      this.cachedIndexes.add(index);
    }
  }

  private loadOne(index: number): Buffer {
    let found: Buffer | undefined;
    this.withPackages(index, index, (_, plain) => (found = plain));
    return found!;
  }

  /**
   * The dirty buffer of package `index`, `length` bytes long, holding its current content
   * except where the caller will overwrite [0, covered) anyway.
   */
  private packageForChange(index: number, length: number, covered: number): Buffer {
    const current = this.dirty.get(index);
    if (current !== undefined && current.length === length) return current;
    const buf = Buffer.alloc(length);
    const oldLength = current?.length ?? payloadLength(index, this.size);
    if (oldLength > covered) {
      const old = current ?? this.loadOne(index);
      old.copy(buf, 0, 0, Math.min(oldLength, length));
    }
    this.setDirty(index, buf);
    return buf;
  }

  private setDirty(index: number, buf: Buffer): void {
    const previous = this.dirty.get(index);
    this.ctx.dirty.bytes += buf.length - (previous?.length ?? 0);
    this.dirty.set(index, buf);
    this.ctx.cache.delete(this.id, index);
  }

  private dropDirty(index: number): void {
    const buf = this.dirty.get(index);
    if (buf === undefined) return;
    this.ctx.dirty.bytes -= buf.length;
    this.dirty.delete(index);
  }

  /**
   * Grows to `newSize` with zeros. A hole of at least ZERO_BATCH whole packages is written
   * straight to disk in batches that let the event loop run in between (sealZeros; a kept 2.0
   * stream is rewritten with it), never held in memory. What is left (the old last package's
   * padding, a partial last package, a small hole) goes through the dirty map like any write:
   * at most ZERO_BATCH packages, so this never flushes half-way (a failing flush puts the file
   * back as it was before the write, not somewhere in the middle of the hole).
   */
  private async extendWithZeros(newSize: number): Promise<void> {
    const firstNew = Math.ceil(this.size / MAX_PAYLOAD);
    const wholeEnd = Math.floor(newSize / MAX_PAYLOAD);
    if (wholeEnd - firstNew >= ZERO_BATCH) {
      if (this.keepsVersion20) await this.rewriteStream(Version.V20, newSize);
      else await this.sealZeros(wholeEnd * MAX_PAYLOAD, newSize);
    }
    let index = this.size === 0 ? 0 : packageIndex(this.size - 1);
    for (; index * MAX_PAYLOAD < newSize; index++) {
      const length = payloadLength(index, newSize);
      if (length !== payloadLength(index, this.size) || index * MAX_PAYLOAD >= this.size) {
        this.packageForChange(index, length, 0);
      }
      this.size = Math.min(newSize, (index + 1) * MAX_PAYLOAD);
    }
    this.size = newSize;
  }

  /**
   * Grows a 1.0 stream to `end` (a package boundary past the old last package) with zero
   * packages sealed straight to disk, ZERO_BATCH at a time, yielding to the event loop between
   * batches (the lock stays held: this file's other requests wait, other files' do not).
   *
   * Space for the whole growth (up to `reserveTo`, the size being reached) is reserved first,
   * so a full disk fails here before any byte is written. Pending changes are flushed before,
   * so that after it only the old last package (padded with zeros to a whole package) is
   * rewritten in place and everything else is appended.
   *
   * Crash safety as for flushLocked, per batch: with the journal each batch commits an entry
   * (the padded old last package's image, in the first batch; otherwise no image) whose size is
   * where the stream ends before the batch's appends, writes, fdatasyncs and retires it, so a
   * crash leaves a valid stream of the old content plus zero packages up to some batch. The
   * entry is retired before the yield: other files' flushes use the journal in between.
   * A failure part-way (a full disk where nothing could be reserved) puts the file back exactly
   * as it was, under a journal entry that says so.
   */
  private async sealZeros(end: number, reserveTo: number): Promise<void> {
    this.flushLocked();
    this.writePrefix();
    // It writes in place: what the journal holds of this file goes there first (and its size).
    if (this.hasPinned) this.ctx.checkpointer?.checkpoint();
    const start = this.size;
    const oldCipherSize = cipherSize(start);
    const partial = start % MAX_PAYLOAD !== 0 ? packageIndex(start - 1) : undefined;
    // The old last package: its plaintext padded to a whole package, and its sealed bytes to
    // put back if the growth fails.
    let padded: Buffer | undefined;
    let restore: Buffer | undefined;
    if (partial !== undefined) {
      padded = Buffer.alloc(MAX_PAYLOAD);
      this.loadOne(partial).copy(padded);
      restore = Buffer.allocUnsafe(oldCipherSize - packageOffset(partial));
      fs.readSync(this.fd, restore, 0, restore.length, packageOffset(partial));
    }
    const journal = this.ctx.journal;
    const entryFor = (writes: JournalEntry['writes'], size: number): JournalEntry => ({
      path: path.relative(journal!.root, this.cipherPath),
      prefix: this.streamPrefix(),
      writes,
      size,
      key: this.key,
    });
    let written = false;
    /** End of the valid stream on disk: the old end, then the end of each batch written. */
    let durable = oldCipherSize;
    try {
      reserveSpace(this.fd, oldCipherSize, cipherSize(reserveTo) - oldCipherSize, this.cipherPath);
      const last = end / MAX_PAYLOAD;
      for (let index = partial ?? start / MAX_PAYLOAD; index < last; ) {
        const batchEnd = Math.min(last, index + ZERO_BATCH);
        const sealed: Buffer[] = [];
        for (let i = index; i < batchEnd; i++) sealed.push(this.seal(i, i === partial ? padded! : ZEROS, false));
        const at = packageOffset(index);
        if (journal) {
          const image = index === partial ? [{ offset: at, bytes: sealed[0] }] : [];
          journal.commit([entryFor(image, index === partial ? at + sealed[0].length : durable)]);
        }
        written = true;
        const n = writevFully(this.fd, sealed, at, this.cipherPath);
        // Durable before the next batch's record (or the last one below) moves the end past it.
        if (journal) io.fdatasyncSync(this.fd, this.cipherPath);
        durable = at + n;
        this.size = this.diskSize = batchEnd * MAX_PAYLOAD;
        if (this.reference === undefined) {
          this.reference = Buffer.alloc(HEADER_SIZE);
          fs.readSync(this.fd, this.reference, 0, HEADER_SIZE, PREFIX_SIZE);
        }
        index = batchEnd;
        if (index < last) await yieldToLoop();
      }
      // The records so far end the file before the last batch: this one says where it ends now.
      // The next checkpoint retires them all.
      if (journal) journal.append([entryFor([], durable)]);
    } catch (err) {
      let restoreErr: unknown;
      if (!written) {
        // Gives back what a failed reservation may have allocated past the end of file.
        io.quietly(() => io.ftruncateSync(this.fd, oldCipherSize, this.cipherPath));
      } else {
        let committed = false;
        try {
          if (journal) {
            const image = partial !== undefined ? [{ offset: packageOffset(partial), bytes: restore! }] : [];
            journal.commit([entryFor(image, oldCipherSize)]);
            committed = true;
          }
          if (partial !== undefined) writeFully(this.fd, restore!, packageOffset(partial), this.cipherPath);
          io.ftruncateSync(this.fd, oldCipherSize, this.cipherPath);
          if (journal) io.fdatasyncSync(this.fd, this.cipherPath);
        } catch (e) {
          restoreErr = e;
          // The committed entry puts the file back at the next mount's replay; without one, at
          // least cut off a batch the failure may have torn.
          if (committed) journal!.hold(`${this.name}: ${err instanceof Error ? err.message : String(err)}`);
          else io.quietly(() => io.ftruncateSync(this.fd, durable, this.cipherPath));
        }
      }
      this.size = this.diskSize = restoreErr === undefined ? start : plaintextSize(durable);
      if (this.size === 0) this.reference = undefined;
      throw restoreErr ?? err;
    }
    if (partial !== undefined) this.ctx.cache.delete(this.id, partial);
  }

  private async flushChanges(): Promise<void> {
    if (this.keepsVersion20) {
      if (this.dirty.size > 0 || this.size !== this.diskSize) await this.rewriteStream(Version.V20);
      return;
    }
    this.flushLocked();
  }

  /**
   * Seals the dirty packages of a 1.0 stream. With the journal they go there (flushToJournal);
   * without, straight in place: a failure while the file grows (a full disk) then puts the file
   * back as it was on disk and drops the unsealed changes, so the file never holds a torn
   * package and reads back whole as before.
   */
  private flushLocked(): void {
    if (this.keepsVersion20) return;
    if (this.dirty.size === 0 && this.size === this.diskSize) return;
    this.writePrefix();
    // A file unlinked while open does not outlive a crash: nothing to journal (its old path may
    // name another file by now); it is written in place.
    const journal = this.unlinked ? undefined : this.ctx.journal;
    if (journal) {
      this.flushToJournal(journal);
      return;
    }
    const oldCipherSize = cipherSize(this.diskSize);
    const oldCount = packageCount(this.diskSize);
    // The old last package, if it changes length, is rewritten across the old end of file:
    // keep its sealed bytes to restore them if that write fails.
    let restore: { offset: number; bytes: Buffer } | undefined;
    if (oldCount > 0 && this.dirty.has(oldCount - 1) && cipherSize(this.size) > oldCipherSize) {
      const offset = packageOffset(oldCount - 1);
      const bytes = Buffer.allocUnsafe(oldCipherSize - offset);
      fs.readSync(this.fd, bytes, 0, bytes.length, offset);
      restore = { offset, bytes };
    }
    // Packages from the old last one on first: when the disk is full, the write that grows the
    // file fails before any package inside the old end of file was overwritten, so the restore
    // below really puts the file back as it was.
    const sorted = [...this.dirty.keys()].sort((a, b) => a - b);
    const grows = Math.max(0, oldCount - 1);
    const indexes = [...sorted.filter((i) => i >= grows), ...sorted.filter((i) => i < grows)];
    const count = packageCount(this.size);
    let written = false;
    try {
      let fileEnd = oldCipherSize;
      let i = 0;
      while (i < indexes.length) {
        let j = i;
        while (j + 1 < indexes.length && indexes[j + 1] === indexes[j] + 1 && j + 1 - i < MAX_IOV_PACKAGES) j++;
        const sealed = indexes.slice(i, j + 1).map((index) => this.seal(index, this.dirty.get(index)!, index === count - 1));
        const at = packageOffset(indexes[i]);
        written = true;
        fileEnd = Math.max(fileEnd, at + writevFully(this.fd, sealed, at, this.cipherPath));
        i = j + 1;
      }
      if (fileEnd !== cipherSize(this.size)) {
        written = true;
        io.ftruncateSync(this.fd, cipherSize(this.size), this.cipherPath);
      }
    } catch (err) {
      try {
        if (written) {
          io.ftruncateSync(this.fd, oldCipherSize, this.cipherPath);
          if (restore) writeFully(this.fd, restore.bytes, restore.offset, this.cipherPath);
        }
      } finally {
        for (const index of indexes) this.dropDirty(index);
        this.size = this.diskSize;
      }
      throw err;
    }
    this.sealed(indexes);
  }

  /**
   * Group commit: seals every dirty package and appends them, with the new size, to the journal
   * as one record, not synced; they stay pinned in memory until the next checkpoint writes them
   * in place (after one journal sync for every file's records). A killed daemon loses nothing:
   * the record is in the page cache, and the next mount's replay writes it. A power cut loses
   * what no sync made durable, and tears nothing: nothing was written in place. A failure (the
   * journal on a full disk) drops the unsealed changes, and the file stays as before them.
   */
  private flushToJournal(journal: Journal): void {
    const sorted = [...this.dirty.keys()].sort((a, b) => a - b);
    const count = packageCount(this.size);
    const newCipherSize = cipherSize(this.size);
    const entry: JournalEntry = { path: path.relative(journal.root, this.cipherPath), prefix: this.streamPrefix(), writes: [], size: newCipherSize, key: this.key };
    const images = new Map<number, Buffer>();
    try {
      for (const index of sorted) {
        const image = this.seal(index, this.dirty.get(index)!, index === count - 1);
        images.set(index, image);
        entry.writes.push({ offset: packageOffset(index), bytes: image });
      }
      // The checkpoint must not fail for want of space (a full disk fails here, before the
      // changes are accepted). The journal holds data twice until its checkpoint: on a full
      // disk, one now gives its space back, and the flush tries once more.
      const onDisk = this.pinnedCipherSize ?? cipherSize(this.diskSize);
      const reserveAndAppend = (): void => {
        if (newCipherSize > onDisk) reserveSpace(this.fd, onDisk, newCipherSize - onDisk, this.cipherPath);
        journal.append([entry]);
      };
      try {
        reserveAndAppend();
      } catch (err) {
        if (!isErrno(err, 'ENOSPC', 'EDQUOT') || !this.ctx.checkpointer) throw err;
        this.ctx.checkpointer.reclaim();
        reserveAndAppend();
      }
    } catch (err) {
      for (const index of sorted) this.dropDirty(index);
      this.size = this.diskSize;
      throw err;
    }
    let added = 0;
    for (const [index, image] of images) {
      added += image.length - (this.pinned.get(index)?.length ?? 0);
      this.pinned.set(index, image);
    }
    for (const [index, image] of this.pinned) {
      if (index < count) continue;
      added -= image.length;
      this.pinned.delete(index);
    }
    this.pinnedCipherSize = newCipherSize;
    this.sealed(sorted);
    // The cipher inode shows the change now (mtime, ctime), as a write in place would have.
    this.keptMtimeNs = touchMtime(this.fd);
    this.ctx.checkpointer?.pinned(this, added);
  }

  /** Times were set on the cipher inode (utimens): a checkpoint keeps its mtime. */
  timesSet(): void {
    if (this.pinnedCipherSize === undefined || this.closed) return;
    this.keptMtimeNs = fs.fstatSync(this.fd, { bigint: true }).mtimeNs;
  }

  /** After a flush: the sealed packages' plaintext goes from the dirty map to the cache. */
  private sealed(indexes: number[]): void {
    for (const index of indexes) {
      const plain = this.dirty.get(index)!;
      this.dropDirty(index);
      this.ctx.cache.set(this.id, index, plain);
      this.cachedIndexes.add(index);
    }
    this.diskSize = this.size;
    if (this.size > 0 && this.reference === undefined) {
      const pinned0 = this.pinned.get(0);
      this.reference = Buffer.alloc(HEADER_SIZE);
      if (pinned0) pinned0.copy(this.reference, 0, 0, HEADER_SIZE);
      else fs.readSync(this.fd, this.reference, 0, HEADER_SIZE, PREFIX_SIZE);
    }
    if (this.size === 0) this.reference = undefined;
  }

  /**
   * Gives a 0-byte cipher file its prefix before its first packages. Not synced: a crash that
   * loses it leaves 0 bytes again (an empty file), one that tears it leaves fewer than 32 (no
   * content; a replay of the flush's journal record, or fsck --repair, puts that right).
   */
  private writePrefix(): void {
    if (this.prefixOnDisk) return;
    writeFully(this.fd, this.streamPrefix(), 0, this.cipherPath);
    this.prefixOnDisk = true;
  }

  /** The stream's 32-byte prefix (the journal names the stream by it), read once. */
  private streamPrefix(): Buffer {
    if (this.prefix === undefined) {
      this.prefix = Buffer.alloc(PREFIX_SIZE);
      fs.readSync(this.fd, this.prefix, 0, PREFIX_SIZE, 0);
    }
    return this.prefix;
  }

  private seal(index: number, plain: Buffer, final: boolean): Buffer {
    this.ctx.counters.packagesSealed++;
    // Fresh random bytes in every 1.0 header: re-sealing a package never reuses a nonce.
    return sealPackage(this.key, { version: Version.V10, cipher: this.cipher, index, nonce: randomNonce(Version.V10), final }, plain);
  }

  /**
   * Writes the whole plaintext (disk plus changes) as a new stream with a new prefix, hence a
   * new key, into a temporary file beside the old one; fsyncs it and renames it over the old
   * name. The only way to change a 2.0 stream without reusing its nonce (FORMAT.md §5).
   */
  private async rewriteStream(target: Version, size = this.size): Promise<void> {
    // The old stream stays whole if this fails: what the journal holds of it goes in place first.
    if (this.hasPinned) this.ctx.checkpointer?.checkpoint();
    const prefix = crypto.randomBytes(PREFIX_SIZE);
    const key = await this.ctx.keys.key(prefix);
    const dir = path.dirname(this.cipherPath);
    const tmp = path.join(dir, `${TEMP_PREFIX}${crypto.randomBytes(8).toString('hex')}`);
    const old = fs.fstatSync(this.fd);
    const cipherDir = this.ctx.dir;
    const fd = io.createSync(tmp, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, old.mode & 0o7777, (f, fl, m) => cipherDir.openFile(f, fl, m));
    const count = packageCount(size);
    const streamNonce = randomNonce(Version.V20);
    try {
      // A full disk fails here, before gigabytes are sealed for nothing.
      reserveSpace(fd, 0, cipherSize(size), tmp);
      writeFully(fd, prefix, 0, tmp);
      let batch: Buffer[] = [];
      let batchAt = PREFIX_SIZE;
      let batchBytes = 0;
      for (let index = 0; index < count; index++) {
        const plain = this.plainForRewrite(index, size);
        const nonce = target === Version.V10 ? randomNonce(Version.V10) : streamNonce;
        batch.push(sealPackage(key, { version: target, cipher: this.cipher, index, nonce, final: index === count - 1 }, plain));
        this.ctx.counters.packagesSealed++;
        batchBytes += batch[batch.length - 1].length;
        if (batch.length === ZERO_BATCH || index === count - 1) {
          writevFully(fd, batch, batchAt, tmp);
          batchAt += batchBytes;
          batch = [];
          batchBytes = 0;
          // The temporary file is ours alone and the lock is held: let other files' requests in.
          if (index < count - 1) await yieldToLoop();
        }
      }
      // The new inode takes the old one's owner, mode and extended attributes, before the fsync
      // that makes it durable.
      let mode = old.mode & 0o7777;
      try {
        fs.fchownSync(fd, old.uid, old.gid);
      } catch {
        // Only root may give files away; keeping our own ownership is the fallback, but then
        // without setuid/setgid: they would now name us, not the file's owner.
        if (old.uid !== process.geteuid?.()) mode &= ~0o6000;
      }
      // The mode exactly: creating it went through our umask, and chown cleared setuid/setgid.
      fs.fchmodSync(fd, mode);
      loadSysCalls().calls?.fcopyxattrs(this.fd, fd);
      io.fsyncSync(fd, tmp);
      // The name as it is now: a rename may have come in while this yielded.
      if (this.unlinked) cipherDir.at(tmp, io.unlinkSync);
      else {
        cipherDir.at2(tmp, this.cipherPath, io.renameSync);
        cipherDir.fsyncDir(path.dirname(this.cipherPath), io.fsyncSync);
      }
    } catch (err) {
      fs.closeSync(fd);
      io.quietly(() => cipherDir.at(tmp, io.removeSync));
      key.fill(0);
      throw err;
    }
    fs.closeSync(this.fd);
    this.fd = fd;
    this.key.fill(0);
    this.key = key;
    this.prefix = undefined;
    this.prefixOnDisk = true;
    this.version = target;
    for (const index of [...this.dirty.keys()]) this.dropDirty(index);
    this.ctx.cache.dropFile(this.id, this.cachedIndexes);
    this.cachedIndexes.clear();
    this.size = size;
    this.diskSize = size;
    this.reference = undefined;
    if (count > 0) {
      this.reference = Buffer.alloc(HEADER_SIZE);
      fs.readSync(fd, this.reference, 0, HEADER_SIZE, PREFIX_SIZE);
    }
    this.ctx.counters.rewrites++;
  }

  /**
   * Package `index`'s plaintext in a stream rewritten at `size` (at least this.size): the
   * current content, padded with zeros, or zeros past the current end (no buffer of its own).
   */
  private plainForRewrite(index: number, size: number): Buffer {
    const length = payloadLength(index, size);
    if (index * MAX_PAYLOAD >= this.size) return ZEROS.subarray(0, length);
    const current = this.dirty.get(index) ?? this.loadOne(index);
    if (current.length === length) return current;
    const padded = Buffer.alloc(length);
    current.copy(padded);
    return padded;
  }

  private syncLocked(mode: 'data' | 'full'): void {
    // What the journal holds of this file goes in place: a checkpoint (one journal sync, and a
    // sync of each file it writes, this one included). Otherwise the journal may still hold the
    // record of a zero fill that says where this file ends: made durable. The file's own sync
    // covers its prefix (written, never synced, at its creation) and, for 'full', its metadata.
    const checkpointer = this.ctx.checkpointer;
    const checkpointed = checkpointer !== undefined && this.hasPinned;
    if (checkpointed) checkpointer.checkpoint();
    else this.ctx.journal?.sync();
    if (mode === 'full') io.fsyncSync(this.fd, this.cipherPath);
    else if (!checkpointed || this.hasPinned) io.fdatasyncSync(this.fd, this.cipherPath);
    // A file whose name is gone (unlinked or replaced while open) has no name to make durable,
    // and its old directory may be gone too.
    if (this.dirNeedsSync && !this.unlinked) {
      this.ctx.dir.fsyncDir(path.dirname(this.cipherPath), io.fsyncSync);
      this.dirNeedsSync = false;
    }
  }
}

const UTIME_NOW = 0x3fffffff;
const UTIME_OMIT = 0x3ffffffe;

/** Sets the file's mtime (and so its ctime) to now; returns the mtime it got. */
function touchMtime(fd: number): bigint {
  const sys = loadSysCalls().calls;
  if (sys) sys.futimens(fd, 0, UTIME_OMIT, 0, UTIME_NOW);
  else {
    const st = fs.fstatSync(fd);
    fs.futimesSync(fd, st.atime, new Date());
  }
  return fs.fstatSync(fd, { bigint: true }).mtimeNs;
}

/** Puts `mtimeNs` back (the atime is left alone): to the nanosecond with the addon, else the µs. */
function restoreMtime(fd: number, mtimeNs: bigint): void {
  let sec = mtimeNs / 1_000_000_000n;
  if (sec * 1_000_000_000n > mtimeNs) sec -= 1n;
  const nsec = Number(mtimeNs - sec * 1_000_000_000n);
  const sys = loadSysCalls().calls;
  if (sys) sys.futimens(fd, 0, UTIME_OMIT, Number(sec), nsec);
  else fs.futimesSync(fd, fs.fstatSync(fd).atime, Number(sec) + nsec / 1e9);
}

let scratchBuffer = Buffer.alloc(0);

/** A reusable buffer of at least `size` bytes (its first `size` bytes are returned). */
function scratch(size: number): Buffer {
  if (scratchBuffer.length < size) scratchBuffer = Buffer.allocUnsafe(Math.max(size, 4 * MAX_PACKAGE));
  return scratchBuffer.subarray(0, size);
}

/** Temporary files of stream rewrites start with this; the plaintext view hides them. */
export const TEMP_PREFIX = '.darefs-tmp.';

export function fsyncDirectory(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    io.fsyncSync(fd, dir);
  } finally {
    fs.closeSync(fd);
  }
}

/** Lets the event loop run what is waiting (other files' requests) before going on. */
function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Reserves [offset, offset + length) of a file's blocks without changing its size
 * (FALLOC_FL_KEEP_SIZE), so the writes that follow cannot run out of space: a full disk fails
 * here (ENOSPC, EDQUOT), before anything is written. Without the addon (Node has no fallocate),
 * or on a file system that cannot (ENOTSUP, ENOSYS), it does without: a full disk then fails a
 * write part-way, and the caller's failure path puts the file back as it was.
 */
function reserveSpace(fd: number, offset: number, length: number, file: string): void {
  if (length <= 0) return;
  try {
    io.fallocateSync(fd, FALLOC_FL_KEEP_SIZE, offset, length, file);
  } catch (err) {
    if (!isErrno(err, 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS')) throw err;
  }
}

function writeFully(fd: number, buf: Buffer, position: number, file?: string): void {
  let done = 0;
  while (done < buf.length) done += io.writeSync(fd, buf, done, buf.length - done, position + done, file);
}

/** Writes all of `bufs` at `position`; returns the byte count. */
function writevFully(fd: number, bufs: Buffer[], position: number, file?: string): number {
  const total = bufs.reduce((n, b) => n + b.length, 0);
  const written = io.writevSync(fd, bufs, position, file);
  if (written < total) {
    // Short writes are rare (a disk filling up mid-way): finish piece by piece to get the error.
    let skip = written;
    let at = position;
    for (const b of bufs) {
      if (skip >= b.length) {
        skip -= b.length;
        at += b.length;
        continue;
      }
      writeFully(fd, b.subarray(skip), at + skip, file);
      at += b.length;
      skip = 0;
    }
  }
  return total;
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && codes.includes((err as NodeJS.ErrnoException).code ?? '');
}

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(message);
  err.code = code;
  return err;
}
