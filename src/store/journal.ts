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
import { CONFIG_DIR, checkMetaDirStat, journalEntryKey, openMetaFile, type MetaDir } from '../keys';
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
const MAGIC = Buffer.from('DAREFSJ2');
// magic (8) | mode (u32) | body length (u32) | entry count (u32) | checksum (u32) | mac (32); all
// zeros: empty. The checksum (CRC-32) and the batch MAC (master mode) cover the first 20 bytes
// and the body. The checksum only tells a batch torn by a crash during its commit (dropped
// quietly: nothing was written in place yet) from one that does not authenticate; it guards
// against nothing else, so the cheapest sum that catches a torn write does (the MAC already costs
// a pass over every image).
const HEADER_SIZE = 56;
/**
 * retire() zeroes the magic only: a batch whose magic is any mix of its own bytes and zeros (a
 * crash tore that 8-byte write) was applied and synced before it, so nothing is lost.
 */
const RETIRE_MARK = Buffer.alloc(MAGIC.length);
const SUM_AT = 20;
const MAC_AT = 24;
const EMPTY_HEADER = Buffer.alloc(HEADER_SIZE);
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
 * A redo journal for package rewrites (issue: crash safety). Before a flush overwrites sealed
 * bytes in place, the new images go here and are fsync'ed; after the flush's data is fsync'ed
 * the journal is emptied. A crash in between leaves a journal whose replay writes every image
 * again, so each package holds either its old or its new sealed content, never a torn mix.
 * Replaying twice is harmless: the images are the same sealed bytes.
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
  /** retire() emptied the journal but did not sync that: sync() does, before an fsync returns. */
  private retiredUnsynced = false;
  /** Why the committed batch must stay until a replay (see hold()). */
  private held: string | undefined;
  /** Bytes of the file the last commit used. */
  private used = 0;

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

  /** Makes `entries` durable; only then may the caller write them in place. */
  commit(entries: JournalEntry[]): void {
    if (this.held !== undefined) {
      throw Object.assign(
        new Error(`the journal keeps a rewrite that failed half-way (${this.held}): unmount and mount again, or run darefs fsck --repair, to finish it`),
        { code: 'EIO' },
      );
    }
    const mode = this.auth.key !== undefined ? MODE_BATCH_MAC : MODE_RECORD_MAC;
    const parts: Buffer[] = [];
    for (const e of entries) {
      const record = encodeRecord(e);
      let tag: Buffer = Buffer.alloc(TAG_SIZE);
      if (mode === MODE_RECORD_MAC) {
        if (e.key === undefined) throw new Error(`journal record of ${e.path} without its file's key (ncrypt mode needs it for the record's MAC)`);
        tag = recordMac(e.key, record);
      }
      parts.push(...record, tag);
    }
    const fd = this.open();
    const header = Buffer.alloc(HEADER_SIZE);
    MAGIC.copy(header, 0);
    header.writeUInt32LE(mode, 8);
    header.writeUInt32LE(parts.reduce((n, p) => n + p.length, 0), 12);
    header.writeUInt32LE(entries.length, 16);
    header.writeUInt32LE(batchChecksum(header, parts), SUM_AT);
    if (mode === MODE_BATCH_MAC) batchMac(this.auth.key!, header, parts).copy(header, MAC_AT);
    const length = header.readUInt32LE(12);
    this.used = HEADER_SIZE + length;
    try {
      writeAll(fd, [header, ...parts], 0, this.file);
      io.fdatasyncSync(fd, this.file);
    } catch (err) {
      // A full disk: what was written is torn (its MAC fails; a replay would drop it), and
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
    io.writeSync(this.fd, RETIRE_MARK, 0, RETIRE_MARK.length, 0, this.file);
    this.used = 0;
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
      this.meta?.close();
      this.meta = undefined;
    }
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
      const size = fs.fstatSync(fd).size;
      const data = Buffer.alloc(size);
      let got = 0;
      while (got < size) {
        const n = fs.readSync(fd, data, got, size - got, got);
        if (n === 0) break;
        got += n;
      }
      return { data: data.subarray(0, got), fd, meta };
    } catch (err) {
      fs.closeSync(fd);
      meta.close();
      throw err;
    }
  }

  /**
   * Applies a committed journal left by a crash and empties it. Returns what was done: a batch
   * that does not authenticate (torn by a crash during its commit, from an older darefs, or not
   * written by darefs) is discarded unapplied; a record that fails a check is skipped and listed.
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
      const batch = this.authenticate(data);
      if ('problem' in batch) {
        result.discarded = true;
        result.reason = batch.problem;
        result.benign = batch.benign === true;
      } else {
        for (const record of batch.records) {
          const outcome = await this.apply(record, batch.mode);
          if (typeof outcome !== 'number') {
            result.skipped.push({ path: record.path, ...outcome });
            continue;
          }
          result.packages += outcome;
          if (!result.files.includes(record.path)) result.files.push(record.path);
        }
      }
      const fd = openMetaFile(meta, JOURNAL_FILE, O_RDWR);
      try {
        io.writeSync(fd, EMPTY_HEADER, 0, HEADER_SIZE, 0, this.file);
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
    this.retiredUnsynced = false;
    return result;
  }

  /** What a replay would do, without doing it (fsck without --repair, a read-only mount). */
  inspect(): JournalInspection {
    const found = this.read();
    if (found === undefined) return { packages: 0, files: [], torn: false };
    fs.closeSync(found.fd);
    found.meta.close();
    if (isEmpty(found.data)) return { packages: 0, files: [], torn: false };
    const batch = this.authenticate(found.data);
    if ('problem' in batch) return { packages: 0, files: [], torn: true, problem: batch.problem };
    return {
      packages: batch.records.reduce((n, e) => n + e.writes.length, 0),
      files: [...new Set(batch.records.map((e) => e.path))],
      torn: false,
    };
  }

  /** The batch's records if the batch as a whole may be used, else why not. */
  private authenticate(data: Buffer): { records: ParsedRecord[]; mode: number } | { problem: string; benign?: boolean } {
    if (data.length >= 8 && data.subarray(0, 8).equals(OLD_MAGIC)) {
      return { problem: 'a batch in the old journal format (DAREFSJ1, not authenticated), so it was not applied; if a crash interrupted a write, darefs fsck names any package it left torn' };
    }
    const torn = { problem: 'a torn batch (a crash during its commit, before anything was written in place)', benign: true };
    if (data.length >= HEADER_SIZE && tornRetireMark(data)) {
      return {
        problem: 'a batch whose retire mark was torn by the crash: the batch had been written in place and synced before, so it was not applied again and nothing was lost',
        benign: true,
      };
    }
    if (data.length < HEADER_SIZE || !data.subarray(0, 8).equals(MAGIC)) return { problem: 'a torn batch header (a crash while the journal was written or emptied), or not a darefs journal at all' };
    const mode = data.readUInt32LE(8);
    const length = data.readUInt32LE(12);
    const count = data.readUInt32LE(16);
    if (HEADER_SIZE + length > data.length) return torn;
    const body = data.subarray(HEADER_SIZE, HEADER_SIZE + length);
    if (batchChecksum(data, [body]) !== data.readUInt32LE(SUM_AT)) return torn;
    if (this.auth.key !== undefined) {
      if (mode !== MODE_BATCH_MAC) return { problem: 'a batch without the MAC of a master-key volume (not written by darefs for this volume)' };
      const want = batchMac(this.auth.key, data.subarray(0, HEADER_SIZE), [body]);
      if (!crypto.timingSafeEqual(want, data.subarray(MAC_AT, MAC_AT + TAG_SIZE))) {
        return { problem: 'a batch whose MAC does not verify under the volume key (not written by darefs for this volume), so it was not applied' };
      }
    } else if (mode !== MODE_RECORD_MAC) {
      return { problem: 'a batch made with a master key, which this mount has not: not applied' };
    }
    const records = parseRecords(body, count);
    if (records === undefined) return { problem: 'a batch whose records do not parse (torn, or not written by darefs), so it was not applied' };
    return { records, mode };
  }

  /**
   * Checks one record and, if every check passes, applies it. Returns the packages written, or
   * why it was skipped (benign: the file was removed or replaced since, nothing to repair).
   */
  private async apply(e: ParsedRecord, mode: number): Promise<number | { reason: string; benign?: boolean }> {
    const refused = (reason: string): { reason: string } => ({ reason });
    if (e.path === '' || path.isAbsolute(e.path)) return refused('is not a path relative to the cipher directory');
    let rel: string;
    try {
      rel = this.dir.relative(e.path);
    } catch (err) {
      return refused(err instanceof UnsafePathError ? 'has an empty, "." or ".." component' : String(err));
    }
    if (rel === '' || rel === CONFIG_DIR || rel.startsWith(`${CONFIG_DIR}/`)) return refused("names darefs's own metadata, not a cipher file");
    let fd: number;
    try {
      fd = this.dir.openFile(rel, O_RDWR);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { reason: 'the file is gone (removed or renamed since the record was made): nothing to repair', benign: true };
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
      // (written with its first packages) was whole on disk. The record, once it authenticates,
      // brings the prefix too.
      const prefixMissing = got < PREFIX_SIZE;
      if (prefixMissing ? !prefix.subarray(0, got).equals(e.prefix.subarray(0, got)) : !prefix.equals(e.prefix)) {
        return prefixMissing
          ? refused(`is ${current} bytes, shorter than a prefix and not the start of the record's: not the file the record was made for`)
          : { reason: 'the file holds another stream (another prefix) than the record was made for: replaced since (renamed over, or rewritten), nothing to repair', benign: true };
      }
      try {
        key = await this.auth.keys.key(e.prefix);
      } catch (err) {
        return refused(`its key cannot be derived: ${(err as Error).message}`);
      }
      if (mode === MODE_RECORD_MAC && !crypto.timingSafeEqual(recordMac(key, e.encoded), e.tag)) {
        return refused("its MAC does not verify under the file's key (not written by darefs with this password)");
      }
      const problem = checkImages(fd, key, e, prefixMissing ? PREFIX_SIZE : current);
      if (problem !== undefined) return refused(problem);
      if (prefixMissing) writeAll(fd, [e.prefix], 0, target);
      for (const w of e.writes) writeAll(fd, [w.bytes], w.offset, target);
      io.ftruncateSync(fd, e.size, target);
      io.fsyncSync(fd, target);
      return e.writes.length;
    } finally {
      key?.fill(0);
      fs.closeSync(fd);
    }
  }
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
  if (data.subarray(0, MAGIC.length).equals(MAGIC)) return false;
  for (let i = 0; i < MAGIC.length; i++) if (data[i] !== 0 && data[i] !== MAGIC[i]) return false;
  const header = Buffer.from(data.subarray(0, HEADER_SIZE));
  MAGIC.copy(header, 0);
  const length = header.readUInt32LE(12);
  if (HEADER_SIZE + length > data.length) return false;
  return batchChecksum(header, [data.subarray(HEADER_SIZE, HEADER_SIZE + length)]) === header.readUInt32LE(SUM_AT);
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

function batchChecksum(header: Buffer, body: Buffer[]): number {
  let crc = zlib.crc32(header.subarray(0, SUM_AT));
  for (const p of body) crc = zlib.crc32(p, crc);
  return crc;
}

function batchMac(key: Buffer, header: Buffer, body: Buffer[]): Buffer {
  const mac = crypto.createHmac('sha256', key).update(header.subarray(0, SUM_AT));
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
function parseRecords(body: Buffer, count: number): ParsedRecord[] | undefined {
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
    for (let w = 0; w < writes; w++) {
      if (!need(12)) return undefined;
      const offset = body.readDoubleLE(at);
      const n = body.readUInt32LE(at + 8);
      at += 12;
      if (!need(n)) return undefined;
      record.writes.push({ offset, bytes: body.subarray(at, at + n) });
      at += n;
    }
    record.encoded = [body.subarray(start, at)];
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
function checkImages(fd: number, key: Buffer, e: JournalEntry, current: number): string | undefined {
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
  if (size > end) return `its size ${size} extends the file past anything written (${end} bytes)`;
  if (images.size === 0 && size === current) return undefined;
  const fromDisk = (index: number, length: number): Buffer | undefined => {
    const at = packageOffset(index);
    if (at + length > current) return undefined;
    const buf = Buffer.alloc(length);
    return fs.readSync(fd, buf, 0, length, at) === length ? buf : undefined;
  };
  const reference = images.get(0)?.subarray(0, DARE_HEADER_SIZE) ?? fromDisk(0, DARE_HEADER_SIZE);
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
  if (size !== current && count > 0 && !images.has(count - 1)) {
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
