import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAX_PACKAGE, PREFIX_SIZE } from '../dare';
import { fsyncDirectory } from './cipher-file';
import * as io from './io';

/** One file's share of a batch: package images to write, then the size to cut the file to. */
export interface JournalEntry {
  /** Cipher path relative to the cipher directory. */
  path: string;
  /** The file's prefix: replay skips a file that was replaced since. */
  prefix: Buffer;
  /** Sealed package images and where they go. */
  writes: Array<{ offset: number; bytes: Buffer }>;
  /** Cipher size once the writes are applied (later, unjournaled appends are cut off). */
  size: number;
}

const MAGIC = Buffer.from('DAREFSJ1');
// magic (8) | body length (u32) | entry count (u32) | sha256(body) (32); all zeros: empty
const HEADER_SIZE = 48;
const EMPTY_HEADER = Buffer.alloc(HEADER_SIZE);

export const JOURNAL_FILE = 'journal';

/**
 * Bytes the journal file keeps allocated (zeros written, not a hole): a batch of up to 16
 * package images fits there even on a full disk, so a small in-place rewrite never fails for
 * want of journal space. Bigger batches grow the file; it keeps that space while the volume is
 * open (the next batch reuses it) and gives it back at close().
 */
export const JOURNAL_RESERVE = 16 * (MAX_PACKAGE + 12) + 4096;

/**
 * A redo journal for package rewrites (issue: crash safety). Before a flush overwrites sealed
 * bytes in place, the new images go here and are fsync'ed; after the flush's data is fsync'ed
 * the journal is emptied. A crash in between leaves a journal whose replay writes every image
 * again, so each package holds either its old or its new sealed content, never a torn mix.
 * Replaying twice is harmless: the images are the same sealed bytes.
 *
 * The journal holds only sealed packages and cipher paths: nothing secret.
 */
export class Journal {
  private fd: number | undefined;
  /** retire() emptied the journal but did not sync that: sync() does, before an fsync returns. */
  private retiredUnsynced = false;
  /** Why the committed batch must stay until a replay (see hold()). */
  private held: string | undefined;
  /** Bytes of the file the last commit used. */
  private used = 0;

  constructor(
    /** The cipher directory. */
    readonly root: string,
    /** `.darefs/` under it. */
    readonly metaDir: string,
  ) {}

  get file(): string {
    return path.join(this.metaDir, JOURNAL_FILE);
  }

  /** Why this process cannot keep the journal (no write access), or undefined when it can. */
  unusable(): string | undefined {
    const where = fs.existsSync(this.metaDir) ? (fs.existsSync(this.file) ? this.file : this.metaDir) : this.root;
    try {
      fs.accessSync(where, fs.constants.W_OK);
      return undefined;
    } catch (err) {
      return `${where}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
    }
  }

  private open(): number {
    if (this.fd !== undefined) return this.fd;
    let created = false;
    if (!fs.existsSync(this.metaDir)) {
      io.mkdirSync(this.metaDir, 0o700);
      fsyncDirectory(this.root);
      created = true;
    }
    const fd = (this.fd = io.createSync(this.file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600));
    const size = fs.fstatSync(fd).size;
    if (created || size === 0) fsyncDirectory(this.metaDir);
    if (size < JOURNAL_RESERVE) {
      try {
        writeAll(fd, [Buffer.alloc(JOURNAL_RESERVE - size)], size, this.file);
      } catch (err) {
        // A disk already full: do without the reserve.
        if (err instanceof io.SimulatedCrash) throw err;
        io.quietly(() => io.ftruncateSync(fd, size, this.file));
      }
    }
    return fd;
  }

  /** Makes `entries` durable; only then may the caller write them in place. */
  commit(entries: JournalEntry[]): void {
    if (this.held !== undefined) {
      throw Object.assign(
        new Error(`the journal keeps a rewrite that failed half-way (${this.held}): unmount and mount again, or run darefs fsck --repair, to finish it`),
        { code: 'EIO' },
      );
    }
    const fd = this.open();
    const parts: Buffer[] = [];
    for (const e of entries) {
      const name = Buffer.from(e.path, 'utf8');
      const head = Buffer.alloc(2 + name.length + PREFIX_SIZE + 8 + 4);
      let at = head.writeUInt16LE(name.length, 0);
      at += name.copy(head, at);
      at += e.prefix.copy(head, at);
      at = head.writeDoubleLE(e.size, at);
      head.writeUInt32LE(e.writes.length, at);
      parts.push(head);
      for (const w of e.writes) {
        const wh = Buffer.alloc(12);
        wh.writeDoubleLE(w.offset, 0);
        wh.writeUInt32LE(w.bytes.length, 8);
        parts.push(wh, w.bytes);
      }
    }
    const hash = crypto.createHash('sha256');
    let length = 0;
    for (const p of parts) {
      hash.update(p);
      length += p.length;
    }
    const header = Buffer.alloc(HEADER_SIZE);
    MAGIC.copy(header, 0);
    header.writeUInt32LE(length, 8);
    header.writeUInt32LE(entries.length, 12);
    hash.digest().copy(header, 16);
    this.used = HEADER_SIZE + length;
    try {
      writeAll(fd, [header, ...parts], 0, this.file);
      io.fdatasyncSync(fd, this.file);
    } catch (err) {
      // A full disk: what was written is torn (its checksum fails; a replay would drop it), and
      // nothing was written in place yet. Mark it empty and give back the space past the reserve.
      io.quietly(() => this.empty(fd, true));
      throw err;
    }
    this.retiredUnsynced = false;
  }

  /**
   * Zeroes the header (the journal is empty). With `giveBack`, also gives back the space past the
   * reserve. A retire keeps it: the next batch then overwrites blocks that are already allocated,
   * where cutting them off and allocating them again cost an ftruncate, block allocation and a
   * heavier fdatasync per flush (random 4 KiB writes flush an 8 MiB batch every 128 writes).
   * close() gives it back.
   */
  private empty(fd: number, giveBack: boolean): void {
    io.writeSync(fd, EMPTY_HEADER, 0, HEADER_SIZE, 0, this.file);
    if (giveBack && fs.fstatSync(fd).size > JOURNAL_RESERVE) io.ftruncateSync(fd, JOURNAL_RESERVE, this.file);
    this.used = 0;
  }

  /**
   * The committed batch could not be applied (an overwrite failed half-way): it stays, and no
   * later batch may replace it, until the next replay finishes it.
   */
  hold(reason: string): void {
    this.held ??= reason;
  }

  get holding(): boolean {
    return this.held !== undefined;
  }

  /** Empties the journal once everything it holds is durable in the files themselves. */
  retire(): void {
    if (this.fd === undefined) return;
    this.empty(this.fd, false);
    this.retiredUnsynced = true;
  }

  /**
   * Makes the last retire() durable. Called before an application's fsync returns: otherwise a
   * power cut could bring back a retired batch whose size cuts off appends that were fsync'ed
   * since (a later commit overwrites the journal durably, so only the last batch can come back).
   */
  sync(): void {
    if (this.fd === undefined || !this.retiredUnsynced) return;
    io.fdatasyncSync(this.fd, this.file);
    this.retiredUnsynced = false;
  }

  /**
   * Gives back the space past the reserve that retired batches left allocated (not while a batch
   * is held for the next replay, or could be: then the file stays as it is), and closes.
   */
  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      if (this.held === undefined && this.used === 0 && fs.fstatSync(fd).size > JOURNAL_RESERVE) {
        // A retired header is all zeros, so cutting the tail off changes nothing a replay reads,
        // once that zero header is durable: else a power cut could keep the old header with a
        // cut body, which a replay would call torn (harmlessly, but misleadingly).
        io.quietly(() => {
          if (this.retiredUnsynced) io.fdatasyncSync(fd, this.file);
          this.retiredUnsynced = false;
          io.ftruncateSync(fd, JOURNAL_RESERVE, this.file);
        });
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Applies a committed journal left by a crash and empties it. Returns what was done; a torn
   * journal (the crash hit the commit itself) is discarded: nothing was written in place yet.
   */
  replay(): ReplayResult {
    const result: ReplayResult = { packages: 0, files: [], discarded: false };
    let data: Buffer;
    try {
      data = fs.readFileSync(this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return result;
      throw err;
    }
    if (isEmpty(data)) {
      // Empty, but maybe only since a retire() that a power cut can still undo: make it stick
      // before anything changes the files again (a mount with --no-journal, say). fdatasync
      // needs no write access.
      const fd = fs.openSync(this.file, 'r');
      try {
        io.fdatasyncSync(fd, this.file);
      } finally {
        fs.closeSync(fd);
      }
      return result;
    }
    const entries = parse(data);
    if (!entries) {
      result.discarded = true;
    } else {
      for (const e of entries) {
        const target = path.resolve(this.root, e.path);
        let fd: number;
        try {
          fd = fs.openSync(target, 'r+');
        } catch {
          continue; // removed since: nothing to repair
        }
        try {
          const prefix = Buffer.alloc(PREFIX_SIZE);
          fs.readSync(fd, prefix, 0, PREFIX_SIZE, 0);
          if (!prefix.equals(e.prefix)) continue; // replaced by another stream since
          for (const w of e.writes) {
            writeAll(fd, [w.bytes], w.offset, target);
            result.packages++;
          }
          io.ftruncateSync(fd, e.size, target);
          io.fsyncSync(fd, target);
          if (!result.files.includes(e.path)) result.files.push(e.path);
        } finally {
          fs.closeSync(fd);
        }
      }
    }
    const fd = fs.openSync(this.file, 'r+');
    try {
      io.writeSync(fd, EMPTY_HEADER, 0, HEADER_SIZE, 0, this.file);
      if (data.length > JOURNAL_RESERVE) io.ftruncateSync(fd, JOURNAL_RESERVE, this.file);
      io.fsyncSync(fd, this.file);
    } finally {
      fs.closeSync(fd);
    }
    this.held = undefined;
    this.retiredUnsynced = false;
    return result;
  }

  /** What a replay would do, without doing it (fsck without --repair). */
  inspect(): { packages: number; files: string[]; torn: boolean } {
    let data: Buffer;
    try {
      data = fs.readFileSync(this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { packages: 0, files: [], torn: false };
      throw err;
    }
    if (isEmpty(data)) return { packages: 0, files: [], torn: false };
    const entries = parse(data);
    if (!entries) return { packages: 0, files: [], torn: true };
    return {
      packages: entries.reduce((n, e) => n + e.writes.length, 0),
      files: [...new Set(entries.map((e) => e.path))],
      torn: false,
    };
  }
}

export interface ReplayResult {
  /** Package images written again. */
  packages: number;
  /** Cipher paths (relative to the cipher directory) the batch repaired. */
  files: string[];
  /** The batch was torn (a crash during its commit) and was dropped: nothing to repair. */
  discarded: boolean;
}

/** No batch: an empty file, or a zeroed header (retired). */
function isEmpty(data: Buffer): boolean {
  return data.subarray(0, HEADER_SIZE).equals(EMPTY_HEADER.subarray(0, Math.min(HEADER_SIZE, data.length)));
}

function parse(data: Buffer): JournalEntry[] | undefined {
  if (data.length < HEADER_SIZE || !data.subarray(0, 8).equals(MAGIC)) return undefined;
  const length = data.readUInt32LE(8);
  const count = data.readUInt32LE(12);
  if (HEADER_SIZE + length > data.length) return undefined;
  const body = data.subarray(HEADER_SIZE, HEADER_SIZE + length);
  if (!crypto.createHash('sha256').update(body).digest().equals(data.subarray(16, 48))) return undefined;
  const entries: JournalEntry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const nameLength = body.readUInt16LE(at);
    at += 2;
    const name = body.subarray(at, at + nameLength).toString('utf8');
    at += nameLength;
    const prefix = Buffer.from(body.subarray(at, at + PREFIX_SIZE));
    at += PREFIX_SIZE;
    const size = body.readDoubleLE(at);
    at += 8;
    const writes = body.readUInt32LE(at);
    at += 4;
    const entry: JournalEntry = { path: name, prefix, size, writes: [] };
    for (let w = 0; w < writes; w++) {
      const offset = body.readDoubleLE(at);
      const n = body.readUInt32LE(at + 8);
      at += 12;
      entry.writes.push({ offset, bytes: body.subarray(at, at + n) });
      at += n;
    }
    entries.push(entry);
  }
  return entries;
}

function writeAll(fd: number, bufs: Buffer[], position: number, file: string): void {
  let at = position;
  // writev takes at most IOV_MAX (1024) buffers; a short write is finished piece by piece.
  for (let i = 0; i < bufs.length; i += 1000) {
    const group = bufs.slice(i, i + 1000);
    let written = io.writevSync(fd, group, at, file);
    for (const b of group) {
      const skip = Math.min(written, b.length);
      written -= skip;
      for (let n = skip; n < b.length; ) n += io.writeSync(fd, b, n, b.length - n, at + n, file);
      at += b.length;
    }
  }
}
