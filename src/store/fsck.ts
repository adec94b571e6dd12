import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import {
  AuthenticationError,
  DareError,
  HEADER_SIZE,
  MAX_PACKAGE,
  MAX_PAYLOAD,
  PACKAGE_OVERHEAD,
  PREFIX_SIZE,
  Version,
  headerCipher,
  headerPayloadLength,
  headerVersion,
  isKnownCipher,
  openPackage,
  packageCount,
  packageOffset,
  payloadLength,
  plaintextSizeOrUndefined,
  SealedLinkError,
} from '../dare';
import { CipherDir } from './cipher-dir';
import { FsckNames, WalkedFile, listFiles, listNamedFiles } from './fsck-walk';
import { NameScheme } from './names';
import { openLink } from './symlink';

/**
 * What `darefs fsck` finds in a file (or symlink) of the cipher directory:
 * - ok: a regular stream whose every package authenticates (random-access rules, FORMAT.md §3);
 *   a symlink whose target is sealed and authenticates (FORMAT.md §7)
 * - empty: 0 bytes, an empty file whose prefix was never written (a crash cut its creation
 *   short); the mount reads it as empty. Information, not damage.
 * - short: 1 to 31 bytes, shorter than the 32-byte prefix: no content (a torn prefix write);
 *   --repair makes it empty
 * - invalid-length: a size no regular stream has (a package cut short), and not an irregular stream
 * - irregular: a valid DARE 1.0 stream with short middle packages (the mount cannot serve it)
 * - damaged: packages that fail authentication or their header checks (listed with their index);
 *   a symlink whose target is not sealed or does not authenticate (the mount answers EIO)
 * - foreign: package 0's header is not DARE (unknown version or cipher): not a DARE stream at all
 * - temp: a leftover temporary file of an interrupted create or stream rewrite
 * - unreadable: the file could not be read (the message says why)
 */
export type FsckStatus = 'ok' | 'empty' | 'short' | 'invalid-length' | 'irregular' | 'damaged' | 'foreign' | 'temp' | 'unreadable';

export interface FsckPackageProblem {
  index: number;
  /** The DARE error class: AuthenticationError, SequenceMismatchError, ... */
  error: string;
  message: string;
}

export interface FsckFile {
  /** Path relative to the cipher directory. */
  path: string;
  /** Encrypted names: the plaintext path, when every name on the way authenticates. */
  plainPath?: string;
  /** Set for a symlink (its size and package fields stay 0 / unset). */
  type?: 'symlink';
  status: FsckStatus;
  cipherSize: number;
  plainSize?: number;
  packages?: number;
  version?: '1.0' | '2.0';
  /** Packages that failed, in index order. */
  problems: FsckPackageProblem[];
  /** What is wrong, in a sentence, for every status but ok. */
  message?: string;
  /** A temp file that --repair removed. */
  removed?: boolean;
  /** A short file that --repair made empty (its status is then 'empty'). */
  repaired?: boolean;
}

export interface FsckOptions {
  /** The cipher directory. */
  root: string;
  /** The key of a stream from its prefix; the checker zeroes the buffer it gets. */
  key: (prefix: Buffer) => Promise<Buffer>;
  /** Files checked at once (default 4). Memory: about 1 MiB per job. */
  jobs?: number;
  /** Names skipped at the root (default: .darefs). */
  skipAtRoot?: ReadonlySet<string>;
  /**
   * Remove leftover temporary files and orphan `.name` files, and make short files (no content)
   * empty (fsck --repair).
   */
  removeTemp?: boolean;
  /** The volume's names (FORMAT.md §8); encrypted ones are opened, checked and reported. Default plain. */
  names?: NameScheme;
  /** Called with the bytes of each file as they are checked (progress). */
  onBytes?: (n: number) => void;
  /** Called before checking starts with the number of files and bytes to check. */
  onTotal?: (files: number, bytes: number) => void;
}

export interface FsckResult {
  files: FsckFile[];
  counts: FsckCounts;
  /** Encrypted names only: what the walk found wrong with names. */
  names?: FsckNames;
}

export interface FsckCounts {
  /** Entries checked: files and symlinks. */
  files: number;
  /** Of which symlinks. */
  symlinks: number;
  ok: number;
  /** Files with any problem (temp files not counted). */
  bad: number;
  packages: number;
  badPackages: number;
  temp: number;
  byStatus: Record<FsckStatus, number>;
}

/** Packages read per read call while verifying a file (1 MiB). */
const BATCH = 16;

/**
 * Checks every regular file and symlink under `root`, several at once. The cipher directory is
 * not trusted (FORMAT.md §6): it is walked and read through CipherDir, so no symlink is ever
 * followed, neither one listed nor one swapped in for a directory or a file since.
 */
export async function checkTree(opts: FsckOptions): Promise<FsckResult> {
  const dir = CipherDir.open(opts.root);
  try {
    const skip = opts.skipAtRoot ?? new Set(['.darefs']);
    const named = opts.names?.encrypted ? listNamedFiles(dir, opts.names, skip, opts.removeTemp === true) : undefined;
    const entries = named?.files ?? listFiles(dir, skip);
    const counted = entries.filter((e) => !e.temp && !e.symlink);
    opts.onTotal?.(counted.length, counted.reduce((n, e) => n + e.size, 0));
    const files: FsckFile[] = new Array(entries.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < entries.length) {
        const i = next++;
        const e = entries[i];
        if (e.temp) files[i] = handleTemp(dir, opts, e);
        else if (e.symlink) files[i] = await checkLink(dir, e.rel, opts.key);
        else {
          files[i] = await checkFile(() => dir.openHandle(e.rel, fs.constants.O_RDONLY), e.rel, opts.key, opts.onBytes);
          if (files[i].status === 'short' && opts.removeTemp) makeEmpty(dir, files[i]);
        }
        if (e.plain !== undefined) files[i].plainPath = e.plain;
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.jobs ?? 4, entries.length)) }, worker));
    const result: FsckResult = { files, counts: countFiles(files) };
    if (named) result.names = named.names;
    return result;
  } finally {
    dir.close();
  }
}


/** Checks a symlink's target: sealed and authenticating (FORMAT.md §7). Never throws for what it finds. */
export async function checkLink(dir: CipherDir, rel: string, keyOf: (prefix: Buffer) => Promise<Buffer>): Promise<FsckFile> {
  const f: FsckFile = { path: rel, type: 'symlink', status: 'ok', cipherSize: 0, problems: [] };
  try {
    const stored = dir.at(rel, (e) => fs.readlinkSync(e, { encoding: 'buffer' }));
    f.cipherSize = stored.length;
    (await openLink({ key: keyOf }, stored, rel)).fill(0);
    return f;
  } catch (err) {
    if (err instanceof SealedLinkError) {
      return bad(f, 'damaged', `symlink: ${err.reason} (the mount answers EIO for it; if it is yours, recreate it through the mount)`);
    }
    return bad(f, 'unreadable', `cannot read the symlink: ${(err as Error).message}`);
  }
}

export function countFiles(files: readonly FsckFile[]): FsckCounts {
  const byStatus: Record<FsckStatus, number> = { ok: 0, empty: 0, short: 0, 'invalid-length': 0, irregular: 0, damaged: 0, foreign: 0, temp: 0, unreadable: 0 };
  let packages = 0;
  let badPackages = 0;
  let symlinks = 0;
  for (const f of files) {
    byStatus[f.status]++;
    if (f.type === 'symlink' && f.status !== 'temp') symlinks++;
    packages += f.packages ?? 0;
    badPackages += f.problems.length;
  }
  const temp = byStatus.temp;
  return { files: files.length - temp, symlinks, ok: byStatus.ok, bad: files.length - temp - byStatus.ok - byStatus.empty, packages, badPackages, temp, byStatus };
}

/**
 * fsck --repair of a file shorter than a prefix: it holds no content (a crash tore the write of
 * its prefix), so cutting it to 0 bytes loses nothing and leaves an empty file. Checked again on
 * the opened descriptor: a file that has grown since is left alone.
 */
function makeEmpty(dir: CipherDir, f: FsckFile): void {
  try {
    const fd = dir.openFile(f.path, fs.constants.O_WRONLY);
    try {
      const size = fs.fstatSync(fd).size;
      if (size === 0 || size >= PREFIX_SIZE) {
        f.message += `; not repaired: it is ${size} bytes now`;
        return;
      }
      fs.ftruncateSync(fd, 0);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    f.status = 'empty';
    f.repaired = true;
    f.message = `was ${f.cipherSize} byte${f.cipherSize === 1 ? '' : 's'}, shorter than the 32-byte prefix (no content); made an empty file`;
    f.cipherSize = 0;
    f.plainSize = 0;
  } catch (err) {
    f.message += `; cannot make it empty: ${(err as Error).message}`;
  }
}

function handleTemp(dir: CipherDir, opts: FsckOptions, e: WalkedFile): FsckFile {
  const f: FsckFile = { path: e.rel, status: 'temp', cipherSize: e.size, problems: [], message: 'leftover temporary file of an interrupted create or rewrite' };
  if (e.symlink) f.type = 'symlink';
  if (opts.removeTemp) {
    try {
      dir.at(e.rel, fs.unlinkSync);
      f.removed = true;
    } catch (err) {
      f.message += `; cannot remove it: ${(err as Error).message}`;
    }
  }
  return f;
}

/** Checks one cipher file by the random-access rules. Never throws for what it finds. */
export async function checkFile(
  open: () => Promise<fsp.FileHandle>,
  rel: string,
  keyOf: (prefix: Buffer) => Promise<Buffer>,
  onBytes?: (n: number) => void,
): Promise<FsckFile> {
  let fh: fsp.FileHandle | undefined;
  const f: FsckFile = { path: rel, status: 'ok', cipherSize: 0, problems: [] };
  try {
    fh = await open();
    const size = (await fh.stat()).size;
    f.cipherSize = size;
    if (size === 0) {
      f.plainSize = 0;
      f.packages = 0;
      return bad(f, 'empty', '0 bytes, no prefix yet (a crash before its first write reached the disk?): an empty file; its first write gives it a prefix');
    }
    if (size < PREFIX_SIZE) {
      return bad(f, 'short', `${size} bytes, shorter than the 32-byte prefix: it holds no content (a crash tore the write of its prefix); --repair makes it an empty file`);
    }
    if (size === PREFIX_SIZE) {
      f.plainSize = 0;
      f.packages = 0;
      return f;
    }
    const head = Buffer.alloc(PREFIX_SIZE + HEADER_SIZE);
    const got = (await fh.read(head, 0, head.length, 0)).bytesRead;
    const plain = plaintextSizeOrUndefined(size);
    if (got < head.length) return bad(f, 'invalid-length', `cipher size ${size} is not a valid DARE stream length (too short for a package)`);
    const header0 = Buffer.from(head.subarray(PREFIX_SIZE));
    const version = headerVersion(header0);
    if ((version !== Version.V10 && version !== Version.V20) || !isKnownCipher(headerCipher(header0))) {
      return bad(f, 'foreign', `not a DARE stream: package 0 has version 0x${hex(version)}, cipher 0x${hex(headerCipher(header0))}`);
    }
    f.version = version === Version.V10 ? '1.0' : '2.0';
    if (plain === undefined) {
      if (version === Version.V10 && (await isIrregular(fh, size))) return irregular(f);
      return bad(f, 'invalid-length', `cipher size ${size} is not a valid DARE stream length: the last package is cut short (or the file was truncated or extended)`);
    }
    f.plainSize = plain;
    const count = packageCount(plain);
    f.packages = count;
    const key = await keyOf(Buffer.from(head.subarray(0, PREFIX_SIZE)));
    try {
      const buf = Buffer.allocUnsafe(BATCH * MAX_PACKAGE);
      for (let first = 0; first < count; first += BATCH) {
        const last = Math.min(count, first + BATCH) - 1;
        const start = packageOffset(first);
        const end = Math.min(packageOffset(last + 1), size);
        const n = (await fh.read(buf, 0, end - start, start)).bytesRead;
        for (let index = first; index <= last; index++) {
          const length = payloadLength(index, plain);
          const at = packageOffset(index) - start;
          const pkg = buf.subarray(at, Math.min(n, at + length + PACKAGE_OVERHEAD));
          try {
            openPackage(key, pkg, { index, payloadLength: length, last: index === count - 1, reference: header0 }).fill(0);
          } catch (err) {
            if (!(err instanceof DareError)) throw err;
            f.problems.push({ index, error: err.name, message: err.detail });
          }
        }
        onBytes?.(end - start + (first === 0 ? PREFIX_SIZE : 0));
      }
      buf.fill(0);
    } finally {
      key.fill(0);
    }
    if (f.problems.length === 0) return f;
    // A short middle package can also make the size look regular: follow the headers' lengths.
    const lengthProblem = f.problems.some((p) => p.error === 'IrregularStreamError' || p.error === 'InvalidPayloadSizeError');
    if (version === Version.V10 && lengthProblem && (await isIrregular(fh, size))) return irregular(f);
    f.status = 'damaged';
    const auth = f.problems.filter((p) => p.error === AuthenticationError.name).length;
    f.message =
      auth === count && count > 1
        ? `no package authenticates: written with another key (another volume?) or wholly corrupted`
        : `${f.problems.length} of ${count} package${count === 1 ? '' : 's'} failed: ${describeIndexes(f.problems)}`;
    return f;
  } catch (err) {
    return bad(f, 'unreadable', `cannot read it: ${(err as Error).message}`);
  } finally {
    await fh?.close();
  }
}

function bad(f: FsckFile, status: FsckStatus, message: string): FsckFile {
  f.status = status;
  f.message = message;
  return f;
}

function irregular(f: FsckFile): FsckFile {
  f.problems = [];
  f.plainSize = undefined;
  return bad(f, 'irregular', 'a DARE 1.0 stream with short middle packages: valid for `darefs decrypt`, but the mount cannot serve it; decrypt and re-encrypt it');
}

/**
 * Whether the headers of a 1.0 stream, followed by their own lengths (as streaming decryption
 * does), chain exactly to the end of the file with some middle package shorter than 64 KiB.
 */
async function isIrregular(fh: fsp.FileHandle, size: number): Promise<boolean> {
  const header = Buffer.alloc(HEADER_SIZE);
  let at = PREFIX_SIZE;
  let short = false;
  for (let index = 0; at < size; index++) {
    if ((await fh.read(header, 0, HEADER_SIZE, at)).bytesRead < HEADER_SIZE) return false;
    if (headerVersion(header) !== Version.V10 || header.readUInt32LE(4) !== index) return false;
    const length = headerPayloadLength(header);
    at += length + PACKAGE_OVERHEAD;
    if (at < size && length < MAX_PAYLOAD) short = true;
  }
  return at === size && short;
}

function hex(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** "3 (AuthenticationError), 7-9 (AuthenticationError)" */
function describeIndexes(problems: readonly FsckPackageProblem[]): string {
  const parts: string[] = [];
  for (let i = 0; i < problems.length && parts.length < 20; ) {
    let j = i;
    while (j + 1 < problems.length && problems[j + 1].index === problems[j].index + 1 && problems[j + 1].error === problems[i].error) j++;
    const range = i === j ? `package ${problems[i].index}` : `packages ${problems[i].index}-${problems[j].index}`;
    parts.push(`${range} (${problems[i].message})`);
    i = j + 1;
  }
  return parts.join(', ') + (parts.length === 20 ? ', ...' : '');
}
