import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import {
  DareError,
  HEADER_SIZE as DARE_HEADER_SIZE,
  MAX_PACKAGE,
  PREFIX_SIZE,
  TAG_SIZE as DARE_TAG_SIZE,
  openPackage,
  packageCount,
  packageOffset,
  payloadLength,
  plaintextSizeOrUndefined,
} from '../dare';
import { CONFIG_DIR, checkMetaDirStat, journalEntryKey, openMetaFile, readOpenFile, type MetaDir } from '../keys';
import { O_PATH } from '../sys';
import type { CipherDir } from './cipher-dir';
import type { KeySource } from './cipher-file';
import { NotRegularFileError, UnsafePathError } from './errors';
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
  /**
   * The file's key (never stored). Without a journal key (ncrypt mode) the record's MAC is made
   * under a key derived from it (journalEntryKey), so only who knows the password can make a
   * record that replays.
   */
  key?: Buffer;
}

/** What authenticates the journal (FORMAT.md §6). */
export interface JournalAuth {
  /**
   * Master mode: the MAC key (journalKey of the master key): every batch carries
   * HMAC-SHA256 under it. The caller owns it (and zeroes it after the journal's last use).
   */
  key?: Buffer;
  /** Keys of the target files: every image must open under its file's key before it is written. */
  keys: KeySource;
}

/** A journal record that failed a check: never applied. */
export interface SkippedRecord {
  /** The path as the journal recorded it. */
  path: string;
  reason: string;
  /**
   * Nothing to repair: the file was removed or replaced since the record was made (what a later
   * unlink, rename or stream rewrite leaves). Otherwise the record failed a check (planted?).
   */
  benign?: boolean;
}

// DAREFSJ1 batches were checked by an unkeyed SHA-256 only: never applied (issue 10).
const OLD_MAGIC = Buffer.from('DAREFSJ1');
/**
 * A batch's header layout. DAREFSJ3 (written): magic (8) | mode (u32) | body length (u32) | entry
 * count (u32) | generation (8) | sequence (u32) | checksum (u32) | mac (32). The journal is a log
 * of batches, one after the other from offset 0, all of one generation (8 random bytes, new after
 * every retire) numbered 0, 1, 2...: a replay reads batches until one is missing, torn or of
 * another generation (what an earlier, longer log left further on). DAREFSJ2 (read only, what
 * darefs wrote before): magic | mode | length | count | checksum | mac, one batch at offset 0.
 *
 * The checksum (CRC-32) and the batch MAC (master mode) cover the header up to the checksum and
 * the body. The checksum only tells a batch torn by a crash during its write (dropped quietly:
 * nothing of it was written in place yet) from one that does not authenticate; it guards against
 * nothing else, so the cheapest sum that catches a torn write does (the MAC already costs a pass
 * over every image).
 */
interface Layout {
  magic: Buffer;
  size: number;
  sumAt: number;
  macAt: number;
  /** Where generation (8) and sequence (u32) are; undefined: a single batch. */
  chainAt?: number;
}
const J3: Layout = { magic: Buffer.from('DAREFSJ3'), size: 68, sumAt: 32, macAt: 36, chainAt: 20 };
const J2: Layout = { magic: Buffer.from('DAREFSJ2'), size: 56, sumAt: 20, macAt: 24 };
const MAGIC = J3.magic;
const HEADER_SIZE = J3.size;
/**
 * retire() zeroes the magic of the first batch only: a batch whose magic is any mix of its own
 * bytes and zeros (a crash tore that 8-byte write) was applied and synced before, so nothing is
 * lost.
 */
const RETIRE_MARK = Buffer.alloc(MAGIC.length);
/** Batch MAC under the journal key (master mode). */
const MODE_BATCH_MAC = 1;
/** One MAC per record under a key derived from its file's key (ncrypt mode). */
const MODE_RECORD_MAC = 2;
const TAG_SIZE = 32;
const RECORD_MAC_LABEL = Buffer.from('darefs journal record\0');
const { O_RDONLY, O_RDWR, O_CREAT, O_PATH_DIR } = { ...fs.constants, O_PATH_DIR: O_PATH | fs.constants.O_DIRECTORY };

export const JOURNAL_FILE = 'journal';

/**
 * Bytes the journal file keeps allocated (zeros written, not a hole): a batch of up to 16
 * package images fits there even on a full disk, so a small in-place rewrite never fails for
 * want of journal space. Bigger batches grow the file; it keeps that space while the volume is
 * open (the next batch reuses it) and gives it back at close().
 */
export const JOURNAL_RESERVE = 16 * (MAX_PACKAGE + 12) + 4096;

/**
 * A redo log of sealed packages (issues 5 and 12: crash safety, group commit). A flush appends a
 * file's sealed packages and new size as a record, without a sync; a checkpoint syncs the log
 * once for every file's records, only then writes them in place, syncs the files and retires the
 * log. A crash in between leaves a log whose replay writes every image again, so each package
 * holds either its old or its new sealed content, never a torn mix; a crash before the sync
 * leaves at worst a torn last batch, dropped, with nothing of it written in place. Replaying
 * twice is harmless: the images are the same sealed bytes, each file's records merged into one.
 *
 * The cipher directory is hostile (FORMAT.md §6): whoever else writes there may plant or edit
 * the journal. So a batch replays only if it authenticates (master mode: a MAC under a key
 * derived from the master key; ncrypt mode: a MAC per record under a key derived from its file's
 * key), and every record is checked again before it touches a file: its path confined beneath
 * the cipher directory (no "..", no symlink, a regular file), its prefix the file's, every image
 * the sealed package at its index under the file's key, its size one whose last package
 * authenticates. A record that fails is reported and skipped. `.darefs` and the journal file
 * are never followed if symlinks, and `.darefs` must pass checkMetaDirStat (src/keys/meta-dir.ts).
 *
 * The journal holds only sealed packages, cipher paths and MACs: nothing secret.
 */
export class Journal {
  private fd: number | undefined;
  /** `.darefs` while the journal file is open. */
  private meta: MetaDir | undefined;
  /** Batches appended since the last fdatasync: sync() makes them durable. */
  private unsynced = false;
  /** A retire since the last fdatasync (giveBack() makes it durable before it cuts the file). */
  private retireUnsynced = false;
  /** Why the committed batches must stay until a replay (see hold()). */
  private held: string | undefined;
  /** Bytes of the file the batches of this generation use: where the next batch goes. */
  private used = 0;
  /** This generation's id and the sequence number of its next batch. */
  private generation = crypto.randomBytes(8);
  private sequence = 0;

  constructor(
    /** The cipher directory: every path the journal touches is resolved beneath it. */
    readonly dir: CipherDir,
    private readonly auth: JournalAuth,
  ) {}

  /** The cipher directory's path. */
  get root(): string {
    return this.dir.root;
  }

  get metaDir(): string {
    return path.join(this.dir.root, CONFIG_DIR);
  }

  get file(): string {
    return path.join(this.metaDir, JOURNAL_FILE);
  }

  /**
   * `.darefs`, opened confined and checked (a real directory of ours that no one else can
   * write, else UnsafeMetaDirError); undefined when it does not exist and `create` is false.
   */
  private openMeta(create: boolean): MetaDir | undefined {
    let created = false;
    let st: fs.Stats;
    try {
      st = this.dir.lstat(CONFIG_DIR);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (!create) return undefined;
      this.dir.at(CONFIG_DIR, (entry) => io.mkdirSync(entry, 0o700));
      this.dir.fsyncDir('', (fd, what) => io.fsyncSync(fd, what));
      created = true;
      st = this.dir.lstat(CONFIG_DIR);
    }
    // The lstat gives the clear message for a symlink; the check of the opened descriptor is
    // the one that counts (the name may have been swapped in between).
    checkMetaDirStat(st, this.metaDir);
    const fd = this.dir.open(CONFIG_DIR, O_PATH_DIR);
    try {
      checkMetaDirStat(fs.fstatSync(fd), this.metaDir);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    return { fd, at: `/proc/self/fd/${fd}`, path: this.metaDir, created, close: () => fs.closeSync(fd) };
  }

  /** Why this process cannot keep the journal (no write access), or undefined when it can. */
  unusable(): string | undefined {
    // The journal file if there is one, else .darefs, else the root: what the first commit writes.
    let where = '';
    for (const candidate of [CONFIG_DIR, `${CONFIG_DIR}/${JOURNAL_FILE}`]) {
      try {
        this.dir.lstat(candidate);
        where = candidate;
      } catch {
        break;
      }
    }
    try {
      this.dir.inode(where, (inode) => fs.accessSync(inode, fs.constants.W_OK));
      return undefined;
    } catch (err) {
      return `${this.dir.absolute(where)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
    }
  }

  private open(): number {
    if (this.fd !== undefined) return this.fd;
    const meta = this.openMeta(true)!;
    let fd: number;
    try {
      fd = io.createSync(this.file, O_RDWR | O_CREAT, 0o600, (_file, flags, mode) => openMetaFile(meta, JOURNAL_FILE, flags, mode));
    } catch (err) {
      meta.close();
      throw err;
    }
    this.fd = fd;
    this.meta = meta;
    const size = fs.fstatSync(fd).size;
    if (meta.created || size === 0) {
      const dirFd = fs.openSync(meta.at, O_RDONLY | fs.constants.O_DIRECTORY);
      try {
        io.fsyncSync(dirFd, this.metaDir);
      } finally {
        fs.closeSync(dirFd);
      }
    }
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

  /** Makes `entries` durable (with every batch before them); only then may the caller write them in place. */
  commit(entries: JournalEntry[]): void {
    this.append(entries);
    this.sync();
  }

  /** Bytes the batches since the last retire take. */
  get bytes(): number {
    return this.used;
  }

  /**
   * Writes `entries` as the next batch of the log, not synced: the page cache has it (a killed
   * daemon loses nothing), and the next sync() makes it durable. Nothing it holds may be written
   * in place before then.
   */
  append(entries: JournalEntry[]): void {
    if (this.held !== undefined) {
      throw Object.assign(
        new Error(`the journal keeps a rewrite that failed half-way (${this.held}): unmount and mount again, or run darefs fsck --repair, to finish it`),
        { code: 'EIO' },
      );
    }
    const mode = this.auth.key !== undefined ? MODE_BATCH_MAC : MODE_RECORD_MAC;
    const parts: Buffer[] = [];
    /** What the MACs cover (macView). */
    const macParts: Buffer[] = [];
    for (const e of entries) {
      const record = encodeRecord(e);
      const view = macView(record);
      let tag: Buffer = Buffer.alloc(TAG_SIZE);
      if (mode === MODE_RECORD_MAC) {
        if (e.key === undefined) throw new Error(`journal record of ${e.path} without its file's key (ncrypt mode needs it for the record's MAC)`);
        tag = recordMac(e.key, view);
      }
      parts.push(...record, tag);
      macParts.push(...view, tag);
    }
    const fd = this.open();
    const header = Buffer.alloc(HEADER_SIZE);
    MAGIC.copy(header, 0);
    header.writeUInt32LE(mode, 8);
    header.writeUInt32LE(parts.reduce((n, p) => n + p.length, 0), 12);
    header.writeUInt32LE(entries.length, 16);
    this.generation.copy(header, J3.chainAt!);
    header.writeUInt32LE(this.sequence, J3.chainAt! + 8);
    header.writeUInt32LE(batchChecksum(J3, header, parts), J3.sumAt);
    if (mode === MODE_BATCH_MAC) batchMac(J3, this.auth.key!, header, macParts).copy(header, J3.macAt);
    const at = this.used;
    try {
      writeAll(fd, [header, ...parts], at, this.file);
    } catch (err) {
      // A full disk: what was written is torn (its checksum fails; a replay stops before it), and
      // nothing of it is written in place. The next batch goes to the same place. If it was the
      // first, mark the log empty: the previous generation's first batch may still verify in
      // what is left.
      if (at === 0) io.quietly(() => io.writeSync(fd, RETIRE_MARK, 0, RETIRE_MARK.length, 0, this.file));
      throw err;
    }
    this.used = at + HEADER_SIZE + header.readUInt32LE(12);
    this.sequence++;
    this.unsynced = true;
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

  /**
   * Empties the journal once everything it holds is durable in the files themselves; the next
   * batch starts a new generation at offset 0. A retire keeps the file's space: the next batches
   * overwrite blocks that are already allocated, where cutting them off and allocating them again
   * cost an ftruncate, block allocation and a heavier fdatasync per checkpoint. close() gives it
   * back.
   */
  retire(): void {
    if (this.fd === undefined || this.held !== undefined) return;
    io.writeSync(this.fd, RETIRE_MARK, 0, RETIRE_MARK.length, 0, this.file);
    this.used = 0;
    this.generation = crypto.randomBytes(8);
    this.sequence = 0;
    this.retireUnsynced = true;
  }

  /**
   * Makes every batch appended durable (and the last retire with them): before an application's
   * fsync returns, and before a checkpoint writes anything in place.
   *
   * A retire alone needs no sync: a retired log that a power cut brings back holds what the files
   * already hold in place, since nothing is written in place after a retire without a sync that
   * first makes the next generation's first batch, at offset 0, durable over it.
   */
  sync(): void {
    if (this.fd === undefined || !this.unsynced) return;
    io.fdatasyncSync(this.fd, this.file);
    this.unsynced = false;
    this.retireUnsynced = false;
  }

  /**
   * Gives back the space past the reserve that retired batches left allocated (not while a batch
   * is held for the next replay, or could be: then the file stays as it is), and closes.
   */
  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    try {
      io.quietly(() => this.giveBack());
    } finally {
      this.fd = undefined;
      fs.closeSync(fd);
      this.meta?.close();
      this.meta = undefined;
    }
  }

  /**
   * Gives back the space past the reserve, when the log is retired (a full disk needs it; close()
   * too). A retired magic is zeros, so cutting the tail off changes nothing a replay reads, once
   * that zero magic is durable: else a power cut could keep the old header with a cut body,
   * which a replay would call torn (harmlessly, but misleadingly).
   */
  giveBack(): void {
    const fd = this.fd;
    if (fd === undefined || this.held !== undefined || this.used !== 0 || fs.fstatSync(fd).size <= JOURNAL_RESERVE) return;
    if (this.unsynced || this.retireUnsynced) {
      io.fdatasyncSync(fd, this.file);
      this.unsynced = false;
      this.retireUnsynced = false;
    }
    io.ftruncateSync(fd, JOURNAL_RESERVE, this.file);
  }

  /** The journal file's bytes, read without following a symlink; undefined when there is none. */
  private read(): { data: Buffer; fd: number; meta: MetaDir } | undefined {
    const meta = this.openMeta(false);
    if (meta === undefined) return undefined;
    let fd: number;
    try {
      fd = openMetaFile(meta, JOURNAL_FILE, O_RDONLY);
    } catch (err) {
      meta.close();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return { data: readOpenFile(fd, fs.fstatSync(fd).size), fd, meta };
    } catch (err) {
      fs.closeSync(fd);
      meta.close();
      throw err;
    }
  }

  /**
   * Applies the batches a crash left and empties the journal. Returns what was done: a first batch
   * that does not authenticate (torn by a crash while it was written, from an older darefs, or not
   * written by darefs) is discarded unapplied, and so is every batch after one that does not; a
   * record that fails a check is skipped and listed.
   *
   * The records of one file (one path and prefix) are merged before anything is written: the
   * last image of each package and the last size. Applying them one by one would not be
   * idempotent: after a crash during the replay, an earlier record's size checked against the
   * file as a later record left it may no longer end on a package of the file.
   */
  async replay(): Promise<ReplayResult> {
    const result: ReplayResult = { packages: 0, files: [], discarded: false, benign: false, skipped: [] };
    const found = this.read();
    if (found === undefined) return result;
    const { data, meta } = found;
    try {
      if (isEmpty(data)) {
        // Empty, but maybe only since a retire() that a power cut can still undo: make it stick
        // before anything changes the files again (a mount with --no-journal, say). fdatasync
        // needs no write access.
        io.fdatasyncSync(found.fd, this.file);
        return result;
      }
      const log = this.parseLog(data);
      if (log.problem !== undefined) {
        result.discarded = true;
        result.reason = log.problem;
        result.benign = log.benign === true;
      }
      for (const group of groupRecords(log.records)) {
        const outcome = await this.apply(group, log.mode);
        result.skipped.push(...outcome.skipped);
        if (outcome.skipped.length === group.length) continue;
        result.packages += outcome.packages;
        if (!result.files.includes(group[0].path)) result.files.push(group[0].path);
      }
      const fd = openMetaFile(meta, JOURNAL_FILE, O_RDWR);
      try {
        io.writeSync(fd, RETIRE_MARK, 0, RETIRE_MARK.length, 0, this.file);
        if (data.length > JOURNAL_RESERVE) io.ftruncateSync(fd, JOURNAL_RESERVE, this.file);
        io.fsyncSync(fd, this.file);
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      fs.closeSync(found.fd);
      meta.close();
    }
    this.held = undefined;
    this.unsynced = false;
    this.retireUnsynced = false;
    return result;
  }

  /** What a replay would do, without doing it (fsck without --repair, a read-only mount). */
  inspect(): JournalInspection {
    const found = this.read();
    if (found === undefined) return { packages: 0, files: [], torn: false };
    fs.closeSync(found.fd);
    found.meta.close();
    if (isEmpty(found.data)) return { packages: 0, files: [], torn: false };
    const log = this.parseLog(found.data);
    const out: JournalInspection = {
      packages: log.records.reduce((n, e) => n + e.writes.length, 0),
      files: [...new Set(log.records.map((e) => e.path))],
      torn: log.records.length === 0 && log.problem !== undefined,
    };
    if (log.problem !== undefined) out.problem = log.problem;
    return out;
  }

  /**
   * The records of every batch that may be used, in order, and why the log ends early when a
   * batch in it does not verify (a torn last batch: benign).
   */
  private parseLog(data: Buffer): { records: ParsedRecord[]; mode: number; problem?: string; benign?: boolean } {
    const first = this.authenticate(data, 0, undefined);
    if ('problem' in first) return { records: [], mode: 0, problem: first.problem, benign: first.benign };
    if (first.kind === 'end') return { records: [], mode: 0 };
    const records = [...first.records];
    let batch = first;
    while (batch.chain !== undefined) {
      const next = this.authenticate(data, batch.next, batch.chain);
      if ('problem' in next) return { records, mode: first.mode, problem: next.problem, benign: next.benign };
      if (next.kind === 'end') break;
      records.push(...next.records);
      batch = next;
    }
    return { records, mode: first.mode };
  }

  /**
   * The batch at `at` if it may be used, 'end' where the log ends (nothing, or what an earlier
   * generation left there), else why not. `chain`: the generation and sequence number the batch
   * must have (undefined for the first).
   */
  private authenticate(
    data: Buffer,
    at: number,
    chain: { generation: Buffer; sequence: number } | undefined,
  ): { kind: 'batch'; records: ParsedRecord[]; mode: number; next: number; chain?: { generation: Buffer; sequence: number } } | { kind: 'end' } | { problem: string; benign?: boolean } {
    const torn =
      at === 0
        ? { problem: 'a torn batch (a crash while it was written, before anything of it was written in place)', benign: true }
        : { problem: 'a torn batch at the end of the log (a crash while it was written, before anything of it was written in place); the batches before it were applied', benign: true };
    const head = data.subarray(at);
    if (chain === undefined) {
      if (head.length >= 8 && head.subarray(0, 8).equals(OLD_MAGIC)) {
        return { problem: 'a batch in the old journal format (DAREFSJ1, not authenticated), so it was not applied; if a crash interrupted a write, darefs fsck names any package it left torn' };
      }
      if (tornRetireMark(head)) {
        return {
          problem: 'a batch whose retire mark was torn by the crash: the batch had been written in place and synced before, so it was not applied again and nothing was lost',
          benign: true,
        };
      }
    }
    const layout = head.length >= 8 && chain === undefined && head.subarray(0, 8).equals(J2.magic) ? J2 : J3;
    if (head.length < layout.size || !head.subarray(0, 8).equals(layout.magic)) {
      if (chain !== undefined) return { kind: 'end' };
      return { problem: 'a torn batch header (a crash while the journal was written or emptied), or not a darefs journal at all' };
    }
    const mode = head.readUInt32LE(8);
    const length = head.readUInt32LE(12);
    const count = head.readUInt32LE(16);
    let here: { generation: Buffer; sequence: number } | undefined;
    if (layout.chainAt !== undefined) {
      here = { generation: head.subarray(layout.chainAt, layout.chainAt + 8), sequence: head.readUInt32LE(layout.chainAt + 8) };
      // Another generation's batch, or an old one of this generation overwritten since: the log ends.
      if (chain !== undefined && (!here.generation.equals(chain.generation) || here.sequence !== chain.sequence)) return { kind: 'end' };
    }
    if (layout.size + length > head.length) return torn;
    const body = head.subarray(layout.size, layout.size + length);
    if (batchChecksum(layout, head, [body]) !== head.readUInt32LE(layout.sumAt)) return torn;
    if (this.auth.key === undefined && mode !== MODE_RECORD_MAC) return { problem: 'a batch made with a master key, which this mount has not: not applied' };
    if (this.auth.key !== undefined && mode !== MODE_BATCH_MAC) return { problem: 'a batch without the MAC of a master-key volume (not written by darefs for this volume)' };
    // Parsing checks every length against what is there before anything is trusted.
    const records = parseRecords(body, count, layout !== J2);
    if (records === undefined && layout === J3) return { problem: 'a batch whose records do not parse (torn, or not written by darefs), so it was not applied' };
    if (this.auth.key !== undefined) {
      const covered = layout === J2 ? [body] : records!.flatMap((r) => [...r.encoded, r.tag]);
      const want = batchMac(layout, this.auth.key, head, covered);
      if (!crypto.timingSafeEqual(want, head.subarray(layout.macAt, layout.macAt + TAG_SIZE))) {
        return { problem: 'a batch whose MAC does not verify under the volume key (not written by darefs for this volume), so it was not applied' };
      }
    }
    if (records === undefined) return { problem: 'a batch whose records do not parse (torn, or not written by darefs), so it was not applied' };
    return {
      kind: 'batch',
      records,
      mode,
      next: at + layout.size + length,
      chain: here && { generation: here.generation, sequence: here.sequence + 1 },
    };
  }

  /**
   * Checks the records of one file (one path, one prefix, in log order) and, if every check
   * passes, applies them merged. Returns the packages written, or why they were skipped (benign:
   * the file was removed or replaced since, nothing to repair).
   */
  private async apply(group: ParsedRecord[], mode: number): Promise<{ packages: number; skipped: SkippedRecord[] }> {
    const e0 = group[0];
    const skipped: SkippedRecord[] = [];
    // Every record of the group, skipped for the same reason.
    const skip = (reason: string, benign?: boolean): { packages: number; skipped: SkippedRecord[] } => {
      for (const e of group) skipped.push(benign ? { path: e.path, reason, benign } : { path: e.path, reason });
      return { packages: 0, skipped };
    };
    const refused = (reason: string): { packages: number; skipped: SkippedRecord[] } => skip(reason);
    if (e0.path === '' || path.isAbsolute(e0.path)) return refused('is not a path relative to the cipher directory');
    let rel: string;
    try {
      rel = this.dir.relative(e0.path);
    } catch (err) {
      return refused(err instanceof UnsafePathError ? 'has an empty, "." or ".." component' : String(err));
    }
    if (rel === '' || rel === CONFIG_DIR || rel.startsWith(`${CONFIG_DIR}/`)) return refused("names darefs's own metadata, not a cipher file");
    let fd: number;
    try {
      fd = this.dir.openFile(rel, O_RDWR);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return skip('the file is gone (removed or renamed since the record was made): nothing to repair', true);
      if (err instanceof UnsafePathError) return refused('goes through a symlink or out of the cipher directory');
      if (err instanceof NotRegularFileError) return refused('is not a regular file');
      return refused(`cannot be opened: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const target = this.dir.absolute(rel);
    let key: Buffer | undefined;
    try {
      const current = fs.fstatSync(fd).size;
      const prefix = Buffer.alloc(PREFIX_SIZE);
      const got = fs.readSync(fd, prefix, 0, PREFIX_SIZE, 0);
      // Shorter than a prefix but the start of this one: the crash came before the stream's prefix
      // (written with its first packages, never synced) was whole on disk. The record, once it
      // authenticates, brings the prefix too.
      const prefixMissing = got < PREFIX_SIZE;
      if (prefixMissing ? !prefix.subarray(0, got).equals(e0.prefix.subarray(0, got)) : !prefix.equals(e0.prefix)) {
        return prefixMissing
          ? refused(`is ${current} bytes, shorter than a prefix and not the start of the record's: not the file the record was made for`)
          : skip('the file holds another stream (another prefix) than the record was made for: replaced since (renamed over, or rewritten), nothing to repair', true);
      }
      try {
        key = await this.auth.keys.key(e0.prefix);
      } catch (err) {
        return refused(`its key cannot be derived: ${(err as Error).message}`);
      }
      const end = prefixMissing ? PREFIX_SIZE : current;
      // Each record on its own first (what does not depend on the file's state), so that one
      // planted among genuine ones is refused alone.
      const passed: ParsedRecord[] = [];
      // Package 0's header is the reference every package is checked against: another record of
      // the file may bring it.
      const package0 = group.flatMap((e) => e.writes).find((w) => w.offset === PREFIX_SIZE)?.bytes;
      for (const e of group) {
        const problem =
          mode === MODE_RECORD_MAC && !crypto.timingSafeEqual(recordMac(key, e.encoded), e.tag)
            ? "its MAC does not verify under the file's key (not written by darefs with this password)"
            : checkImages(fd, key, e, end, false, package0);
        if (problem === undefined) passed.push(e);
        else skipped.push({ path: e.path, reason: problem });
      }
      if (passed.length === 0) return { packages: 0, skipped };
      const merged = mergeRecords(passed);
      const problem = checkImages(fd, key, merged, end);
      if (problem !== undefined) {
        for (const e of passed) skipped.push({ path: e.path, reason: problem });
        return { packages: 0, skipped };
      }
      if (prefixMissing) writeAll(fd, [e0.prefix], 0, target);
      for (const w of merged.writes) writeAll(fd, [w.bytes], w.offset, target);
      io.ftruncateSync(fd, merged.size, target);
      io.fsyncSync(fd, target);
      return { packages: merged.writes.length, skipped };
    } finally {
      key?.fill(0);
      fs.closeSync(fd);
    }
  }
}

/** The records of each file (path and prefix), in the order of each one's first record. */
function groupRecords(records: ParsedRecord[]): ParsedRecord[][] {
  const groups = new Map<string, ParsedRecord[]>();
  for (const r of records) {
    const id = `${r.prefix.toString('hex')}:${r.path}`;
    const g = groups.get(id);
    if (g) g.push(r);
    else groups.set(id, [r]);
  }
  return [...groups.values()];
}

/**
 * One file's records as one: the last image of each package below the last size, and the last
 * size. The same as applying them in order: a package past a shrink that a later record grows
 * over again always comes with a new image (a growth seals every new package, or writes it in
 * place and syncs it before its record's successor).
 */
function mergeRecords(group: ParsedRecord[]): JournalEntry {
  const last = group[group.length - 1];
  const plain = Number.isSafeInteger(last.size) ? plaintextSizeOrUndefined(last.size) : undefined;
  const count = plain === undefined ? Infinity : packageCount(plain);
  const images = new Map<number, Buffer>();
  for (const r of group) for (const w of r.writes) images.set(w.offset, w.bytes);
  const writes = [...images]
    .filter(([offset]) => (offset - PREFIX_SIZE) / MAX_PACKAGE < count)
    .sort((a, b) => a[0] - b[0])
    .map(([offset, bytes]) => ({ offset, bytes }));
  return { path: last.path, prefix: last.prefix, size: last.size, writes };
}

export interface ReplayResult {
  /** Package images written again. */
  packages: number;
  /** Cipher paths (relative to the cipher directory) the batch repaired. */
  files: string[];
  /**
   * The batch was dropped unapplied: torn (a crash during its commit: nothing to repair), in the
   * old unauthenticated format, or not authenticated. `reason` says which.
   */
  discarded: boolean;
  reason?: string;
  /** The discarded batch needed nothing (torn in its commit, or its retire mark torn): nothing lost. */
  benign: boolean;
  /** Records that failed a check and were not applied (whoever else writes .darefs/journal). */
  skipped: SkippedRecord[];
}

export interface JournalInspection {
  packages: number;
  files: string[];
  /** The batch cannot be used (torn, old format, not authenticated): a replay drops it. */
  torn: boolean;
  /** Why, when torn. */
  problem?: string;
}

/** A record as parsed, with its bytes as the MAC covers them. */
interface ParsedRecord extends JournalEntry {
  encoded: Buffer[];
  tag: Buffer;
}

/** No batch: an empty file, or a zeroed magic (retired). */
function isEmpty(data: Buffer): boolean {
  const magic = data.subarray(0, MAGIC.length);
  return magic.equals(RETIRE_MARK.subarray(0, magic.length));
}

/**
 * A magic that is neither the batch's nor zeros but a mix of both, byte by byte, over a header
 * and body that verify with the magic put back: retire() was torn.
 */
function tornRetireMark(data: Buffer): boolean {
  if (data.length < 8) return false;
  const layout = data.subarray(0, 8).equals(J2.magic) ? J2 : J3;
  if (data.subarray(0, 8).equals(layout.magic)) return false;
  for (const candidate of [J3, J2]) {
    if (data.length < candidate.size) continue;
    let mix = true;
    for (let i = 0; i < 8; i++) if (data[i] !== 0 && data[i] !== candidate.magic[i]) mix = false;
    if (!mix) continue;
    const header = Buffer.from(data.subarray(0, candidate.size));
    candidate.magic.copy(header, 0);
    const length = header.readUInt32LE(12);
    if (candidate.size + length > data.length) continue;
    if (batchChecksum(candidate, header, [data.subarray(candidate.size, candidate.size + length)]) === header.readUInt32LE(candidate.sumAt)) return true;
  }
  return false;
}

/** A record's bytes (without its tag): path length (u16) | path | prefix | size (f64) | count (u32) | (offset (f64) | length (u32) | image)*. */
function encodeRecord(e: JournalEntry): Buffer[] {
  const name = Buffer.from(e.path, 'utf8');
  const head = Buffer.alloc(2 + name.length + PREFIX_SIZE + 8 + 4);
  let at = head.writeUInt16LE(name.length, 0);
  at += name.copy(head, at);
  at += e.prefix.copy(head, at);
  at = head.writeDoubleLE(e.size, at);
  head.writeUInt32LE(e.writes.length, at);
  const parts: Buffer[] = [head];
  for (const w of e.writes) {
    const wh = Buffer.alloc(12);
    wh.writeDoubleLE(w.offset, 0);
    wh.writeUInt32LE(w.bytes.length, 8);
    parts.push(wh, w.bytes);
  }
  return parts;
}

/**
 * What a DAREFSJ3 MAC covers of a record (its parts as encodeRecord makes them: head, then per
 * image its offset and length, then the image): all but the middle of each image, whose first
 * 32 bytes (the package header, with its random nonce) and last 16 (its AEAD tag) stand for it.
 * The replay opens every image under its file's key, and AEAD authenticates the rest; the nonce
 * and tag name one sealed package, so no other (an older version, say) can take its place. Not
 * hashing every image twice (the checksum already reads it) is a quarter of the CPU time of a
 * 4 KiB random write.
 */
function macView(parts: Buffer[]): Buffer[] {
  const view: Buffer[] = [parts[0]];
  for (let i = 1; i + 1 < parts.length; i += 2) {
    const image = parts[i + 1];
    view.push(parts[i]);
    if (image.length <= DARE_HEADER_SIZE + DARE_TAG_SIZE) view.push(image);
    else view.push(image.subarray(0, DARE_HEADER_SIZE), image.subarray(image.length - DARE_TAG_SIZE));
  }
  return view;
}

function batchChecksum(layout: Layout, header: Buffer, body: Buffer[]): number {
  let crc = zlib.crc32(header.subarray(0, layout.sumAt));
  for (const p of body) crc = zlib.crc32(p, crc);
  return crc;
}

function batchMac(layout: Layout, key: Buffer, header: Buffer, body: Buffer[]): Buffer {
  const mac = crypto.createHmac('sha256', key).update(header.subarray(0, layout.sumAt));
  for (const p of body) mac.update(p);
  return mac.digest();
}

function recordMac(fileKey: Buffer, record: Buffer[]): Buffer {
  const key = journalEntryKey(fileKey);
  try {
    const mac = crypto.createHmac('sha256', key).update(RECORD_MAC_LABEL);
    for (const p of record) mac.update(p);
    return mac.digest();
  } finally {
    key.fill(0);
  }
}

/** The records of a body, every length checked against what is there; undefined if they do not fit. */
function parseRecords(body: Buffer, count: number, viewed: boolean): ParsedRecord[] | undefined {
  const records: ParsedRecord[] = [];
  let at = 0;
  const need = (n: number): boolean => at + n <= body.length;
  for (let i = 0; i < count; i++) {
    const start = at;
    if (!need(2)) return undefined;
    const nameLength = body.readUInt16LE(at);
    at += 2;
    if (!need(nameLength + PREFIX_SIZE + 12)) return undefined;
    const name = body.subarray(at, at + nameLength).toString('utf8');
    at += nameLength;
    const prefix = Buffer.from(body.subarray(at, at + PREFIX_SIZE));
    at += PREFIX_SIZE;
    const size = body.readDoubleLE(at);
    const writes = body.readUInt32LE(at + 8);
    at += 12;
    const record: ParsedRecord = { path: name, prefix, size, writes: [], encoded: [], tag: Buffer.alloc(0) as Buffer };
    const raw: Buffer[] = [body.subarray(start, at)];
    for (let w = 0; w < writes; w++) {
      if (!need(12)) return undefined;
      const offset = body.readDoubleLE(at);
      const n = body.readUInt32LE(at + 8);
      raw.push(body.subarray(at, at + 12));
      at += 12;
      if (!need(n)) return undefined;
      record.writes.push({ offset, bytes: body.subarray(at, at + n) });
      raw.push(body.subarray(at, at + n));
      at += n;
    }
    record.encoded = viewed ? macView(raw) : [body.subarray(start, at)];
    if (!need(TAG_SIZE)) return undefined;
    record.tag = body.subarray(at, at + TAG_SIZE);
    at += TAG_SIZE;
    records.push(record);
  }
  return at === body.length ? records : undefined;
}

/**
 * The checks of FORMAT.md §6 on a record's content against the file it targets (open as `fd`,
 * `current` bytes long, its key `key`): every image is the sealed package at its index (its
 * offset a package boundary), the size a valid cipher size that the file reaches (the images or
 * the bytes there already), and when the size cuts or extends the file, the package that then
 * ends it opens as the last package. Returns why not, or undefined.
 */
function checkImages(fd: number, key: Buffer, e: JournalEntry, current: number, againstFile = true, package0?: Buffer): string | undefined {
  const size = e.size;
  const plain = Number.isSafeInteger(size) ? plaintextSizeOrUndefined(size) : undefined;
  if (plain === undefined) return `its size ${size} is not the size of a DARE stream`;
  const count = packageCount(plain);
  const images = new Map<number, Buffer>();
  let end = current;
  for (const w of e.writes) {
    const index = (w.offset - PREFIX_SIZE) / MAX_PACKAGE;
    if (!Number.isSafeInteger(index) || index < 0) return `an image at offset ${w.offset}, not a package boundary`;
    if (index >= count) return `an image of package ${index}, past the ${count} package${count === 1 ? '' : 's'} of its size`;
    if (images.has(index)) return `two images of package ${index}`;
    images.set(index, w.bytes);
    end = Math.max(end, w.offset + w.bytes.length);
  }
  if (againstFile && size > end) return `its size ${size} extends the file past anything written (${end} bytes)`;
  if (images.size === 0 && (size === current || !againstFile)) return undefined;
  const fromDisk = (index: number, length: number): Buffer | undefined => {
    const at = packageOffset(index);
    if (at + length > current) return undefined;
    const buf = Buffer.alloc(length);
    return fs.readSync(fd, buf, 0, length, at) === length ? buf : undefined;
  };
  const reference = images.get(0)?.subarray(0, DARE_HEADER_SIZE) ?? package0?.subarray(0, DARE_HEADER_SIZE) ?? fromDisk(0, DARE_HEADER_SIZE);
  if (count > 0 && reference === undefined) return 'package 0 is neither written by it nor in the file';
  const open = (index: number, pkg: Buffer): string | undefined => {
    try {
      openPackage(key, pkg, { index, payloadLength: payloadLength(index, plain), last: index === count - 1, reference: reference! }).fill(0);
      return undefined;
    } catch (err) {
      if (err instanceof DareError) return `${err.name}: ${err.message}`;
      throw err;
    }
  };
  for (const [index, image] of images) {
    const problem = open(index, image);
    if (problem !== undefined) return `its image of package ${index} does not open under the file's key as that package (${problem})`;
  }
  if (againstFile && size !== current && count > 0 && !images.has(count - 1)) {
    const last = fromDisk(count - 1, payloadLength(count - 1, plain) + DARE_HEADER_SIZE + DARE_TAG_SIZE);
    if (last === undefined) return `its size ${size} ends the file in package ${count - 1}, which is neither written by it nor whole in the file`;
    const problem = open(count - 1, last);
    if (problem !== undefined) return `its size ${size} would end the file with package ${count - 1}, which does not open as the last package (${problem})`;
  }
  return undefined;
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
