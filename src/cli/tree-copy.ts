// Copies a whole directory tree through a per-file transformation (encrypt for
// `import`, decrypt for `export`): the engine both commands share.
//
//   1. walk the source (lstat only; never follows symlinks; a cipher directory through its
//      CipherDir, confined), skipping temp files and the names the command excludes at the
//      root (.darefs);
//   2. create the destination directories (owner-writable for now) and remove temp files a
//      killed run left in them (a cipher directory through its CipherDir, confined: see
//      DestinationWriter);
//   3. files and symlinks, `jobs` at a time: an existing destination that is complete and
//      verified is skipped; anything else is written to TEMP_PREFIX+random beside its target,
//      fsynced, given its mode/owner/times, renamed over the target, and the directory fsynced,
//      so a real name never holds a half-written file;
//   4. directory modes, owners and times, deepest first (writing into a directory changes its
//      mtime, so these come last).
// A file that fails is reported on stderr and the copy goes on; the caller decides the exit code.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CipherDir, fsyncDirectory, TEMP_PREFIX, UnsafePathError } from '../store';
import { InterruptedError, isErrno, messageFor } from './errors';
import { formatBytes, formatDuration, Progress } from './progress';

type Stats = fs.BigIntStats;

export interface TreeEntry {
  /** Path relative to the tree's root ('' for the root). */
  readonly rel: string;
  readonly kind: 'dir' | 'file' | 'symlink' | 'other';
  readonly stat: Stats;
}

/** What differs between import and export: how one regular file is transformed. */
export interface FileCodec {
  /** Size the destination of this source must have; throws when the source cannot be copied (bad cipher size). */
  destinationSize(src: string, entry: TreeEntry): number;
  /** Bytes the copy of this source counts for progress (the plaintext size). */
  progressBytes(entry: TreeEntry): number;
  /** Streams `src` into `out` (an empty file opened for writing); calls `onBytes` with progress bytes. */
  transform(src: string, out: fs.promises.FileHandle, entry: TreeEntry, onBytes: (n: number) => void, signal: AbortSignal): Promise<void>;
  /**
   * Whether `dst` (which has the right size and mtime) is a complete copy of `src`:
   * true, or why not. Reads the file(s), a cipher file confined beneath the cipher directory
   * (the codec holds its CipherDir: `dst` and `src` are for messages then); calls `onBytes`
   * with progress bytes.
   */
  verify(src: string, dst: string, entry: TreeEntry, onBytes: (n: number) => void, signal: AbortSignal): Promise<true | string>;
  /** The plaintext target of a source symlink from what it stores (export opens a sealed one, or throws). */
  sourceLinkTarget(stored: Buffer, src: string): Promise<Buffer>;
  /** What a destination symlink stores for a plaintext target (import seals it, FORMAT.md §7). */
  destinationLinkTarget(plain: Buffer): Promise<Buffer>;
  /** Whether an existing destination symlink's stored target holds `plain` (false when it cannot be opened). */
  destinationLinkHolds(stored: Buffer, plain: Buffer): Promise<boolean>;
}

export interface TreeCopyOptions {
  command: string;
  srcRoot: string;
  dstRoot: string;
  codec: FileCodec;
  /** Files copied at once. */
  jobs: number;
  /** Trust size and mtime alone for skipping (no verification read). */
  quick: boolean;
  /** No progress line, no notes, no summary (errors are still printed). */
  quiet: boolean;
  /** Names excluded at the source root (e.g. '.darefs'). */
  excludeAtRoot: ReadonlySet<string>;
  /** Whether to create dstRoot when it is missing (mode 0700). */
  createRoot: boolean;
  /**
   * The source is a cipher directory (export): walk it and read its symlinks through this, so
   * nothing planted there (a symlink, one swapped in for a directory) is ever followed.
   */
  srcDir?: CipherDir;
  /**
   * The destination is a cipher directory (import): every write, mode, owner, time, rename and
   * read of what is already there goes through this, so a symlink planted or swapped in (even
   * during the run) never leads a write outside it (FORMAT.md §6).
   */
  dstDir?: CipherDir;
}

/** How the walk reads the source tree: by path (the user's own plaintext tree) or confined. */
interface SourceReader {
  readdir(rel: string): Promise<string[]>;
  lstat(rel: string): Promise<Stats>;
  readlink(rel: string): Promise<Buffer>;
}

function sourceReader(o: TreeCopyOptions): SourceReader {
  const dir = o.srcDir;
  if (dir) {
    return {
      readdir: async (rel) => dir.readdir(rel),
      lstat: async (rel) => dir.lstat(rel, { bigint: true }),
      readlink: async (rel) => dir.at(rel, (e) => fs.readlinkSync(e, { encoding: 'buffer' })),
    };
  }
  return {
    readdir: (rel) => fs.promises.readdir(path.join(o.srcRoot, rel)),
    lstat: (rel) => fs.promises.lstat(path.join(o.srcRoot, rel), { bigint: true }),
    readlink: (rel) => fs.promises.readlink(path.join(o.srcRoot, rel), { encoding: 'buffer' }),
  };
}

export interface CopyFailure {
  rel: string;
  error: unknown;
}

export interface CopySummary {
  filesCopied: number;
  filesSkipped: number;
  filesFailed: number;
  /** Failures of directories and symlinks. */
  otherErrors: number;
  symlinks: number;
  dirs: number;
  /** Entries that are neither file, directory nor symlink (fifos, sockets, devices): not copied. */
  unsupported: number;
  /** Progress bytes of the files written. */
  bytesCopied: number;
  /** Progress bytes read to verify files that were then skipped. */
  bytesVerified: number;
  elapsedMs: number;
  failures: CopyFailure[];
}

/**
 * Two mtimes are the same when they differ by less than this: utimes() takes a double of
 * seconds (about 0.25 µs of precision today), lutimes() microseconds.
 */
const MTIME_TOLERANCE_NS = 2000n;

export function sameTime(a: bigint, b: bigint): boolean {
  const d = a - b;
  return d < MTIME_TOLERANCE_NS && d > -MTIME_TOLERANCE_NS;
}

function seconds(ns: bigint): number {
  return Number(ns / 1_000_000_000n) + Number(ns % 1_000_000_000n) / 1e9;
}

const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

/** Temp name beside `target`: hidden from the plaintext view, removed by the next run if left over. */
export function tempNameFor(target: string): string {
  return path.join(path.dirname(target), `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
}

/** The directory holding `rel` ('' for the root). */
function parentOf(rel: string): string {
  const d = path.dirname(rel);
  return d === '.' ? '' : d;
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await fs.promises.lstat(p, { bigint: true });
  } catch (err) {
    if (isErrno(err) && err.code === 'ENOENT') return undefined;
    throw err;
  }
}

function kindOf(st: Stats): TreeEntry['kind'] {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

/**
 * How the copy touches the destination tree, by paths relative to its root: by path (export's
 * plaintext destination, the user's own directory) or confined beneath a CipherDir (import).
 */
interface DestinationWriter {
  /** lstat, or undefined when nothing is there. */
  lstat(rel: string): Promise<Stats | undefined>;
  /** A new directory, mode 0700 (the root with its missing parents, when `createRoot`). */
  mkdir(rel: string): Promise<void>;
  chmod(rel: string, mode: number): Promise<void>;
  readdir(rel: string): Promise<string[]>;
  /** Removes a non-directory entry; nothing there is fine. */
  unlink(rel: string): Promise<void>;
  /** A new, empty, regular file opened for writing, mode 0600 (never an existing one). */
  create(rel: string): Promise<fs.promises.FileHandle>;
  symlink(target: Buffer, rel: string): Promise<void>;
  readlink(rel: string): Promise<Buffer>;
  /** `from` takes the name `to`, replacing what is there (both in one directory). */
  rename(from: string, to: string): Promise<void>;
  /** Owner (when root), mode and times of the entry at `rel` from `st`: for a symlink owner and times. */
  applyMetadata(rel: string, st: Stats, kind: TreeEntry['kind']): Promise<void>;
  /** fsync of the directory `rel` (a new name in it is durable). */
  fsyncDir(rel: string): void;
}

/** Owner (when root), mode and times of an open file from `st`. */
async function applyMetadataToHandle(h: fs.promises.FileHandle, st: Stats): Promise<void> {
  // chown first: it clears set-user-ID and set-group-ID bits that chmod then puts back.
  if (isRoot()) await h.chown(Number(st.uid), Number(st.gid));
  await h.chmod(Number(st.mode & 0o7777n));
  await h.utimes(seconds(st.atimeNs), seconds(st.mtimeNs));
}

function pathWriter(root: string, createRoot: boolean): DestinationWriter {
  const at = (rel: string): string => path.join(root, rel);
  return {
    lstat: (rel) => lstatOrUndefined(at(rel)),
    mkdir: async (rel) => {
      await fs.promises.mkdir(at(rel), { mode: 0o700, recursive: rel === '' && createRoot });
    },
    chmod: (rel, mode) => fs.promises.chmod(at(rel), mode),
    readdir: (rel) => fs.promises.readdir(at(rel)),
    unlink: (rel) => fs.promises.rm(at(rel), { force: true }),
    create: (rel) => fs.promises.open(at(rel), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600),
    symlink: (target, rel) => fs.promises.symlink(target, at(rel)),
    readlink: (rel) => fs.promises.readlink(at(rel), { encoding: 'buffer' }),
    rename: (from, to) => fs.promises.rename(at(from), at(to)),
    async applyMetadata(rel, st, kind) {
      const p = at(rel);
      if (isRoot()) await fs.promises.lchown(p, Number(st.uid), Number(st.gid));
      if (kind !== 'symlink') await fs.promises.chmod(p, Number(st.mode & 0o7777n));
      // utimes keeps sub-microsecond precision; lutimes (for symlinks) only microseconds.
      if (kind === 'symlink') await fs.promises.lutimes(p, seconds(st.atimeNs), seconds(st.mtimeNs));
      else await fs.promises.utimes(p, seconds(st.atimeNs), seconds(st.mtimeNs));
    },
    fsyncDir: (rel) => fsyncDirectory(at(rel)),
  };
}

/**
 * The destination as a cipher directory: every path resolved beneath `dir` with no symlink
 * (CipherDir), calls by path only through `at` (never following the last component) or on the
 * inode already opened. Errors name the cipher path (CipherDir sees to that).
 */
function confinedWriter(dir: CipherDir): DestinationWriter {
  const abs = (rel: string): string => dir.absolute(rel);
  /** The inode at `rel` (never a symlink followed), checked to be of `kind`, as a path for calls that follow. */
  const inodeOf = <T>(rel: string, kind: 'file' | 'dir', fn: (inode: string) => T): T =>
    dir.inode(abs(rel), (inode, st) => {
      if (kind === 'dir' ? !st.isDirectory() : !st.isFile()) {
        throw new UnsafePathError(abs(rel), `is no longer a ${kind === 'dir' ? 'directory' : 'regular file'}`);
      }
      return fn(inode);
    });
  return {
    async lstat(rel) {
      try {
        return dir.lstat(abs(rel), { bigint: true });
      } catch (err) {
        if (isErrno(err) && err.code === 'ENOENT') return undefined;
        throw err;
      }
    },
    mkdir: async (rel) => dir.at(abs(rel), (e) => fs.mkdirSync(e, 0o700)),
    chmod: async (rel, mode) => dir.chmod(abs(rel), mode),
    readdir: async (rel) => dir.readdir(abs(rel)),
    unlink: async (rel) =>
      dir.at(abs(rel), (e) => {
        try {
          fs.unlinkSync(e);
        } catch (err) {
          if (!(isErrno(err) && err.code === 'ENOENT')) throw err;
        }
      }),
    create: (rel) => dir.openHandle(abs(rel), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600),
    symlink: async (target, rel) => dir.at(abs(rel), (e) => fs.symlinkSync(target, e)),
    readlink: async (rel) => dir.at(abs(rel), (e) => fs.readlinkSync(e, { encoding: 'buffer' })),
    rename: async (from, to) => dir.at2(abs(from), abs(to), (a, b) => fs.renameSync(a, b)),
    applyMetadata: async (rel, st, kind) => {
      const atime = seconds(st.atimeNs);
      const mtime = seconds(st.mtimeNs);
      if (kind === 'symlink') {
        // lchown and lutimes never follow the last component: the link itself, wherever it is.
        dir.at(abs(rel), (e) => {
          if (isRoot()) fs.lchownSync(e, Number(st.uid), Number(st.gid));
          fs.lutimesSync(e, atime, mtime);
        });
        return;
      }
      // On the inode opened without following: chown, chmod and utimes follow, but there is
      // nothing left to follow, and a symlink found there instead is refused.
      inodeOf(rel, kind === 'dir' ? 'dir' : 'file', (inode) => {
        if (isRoot()) fs.chownSync(inode, Number(st.uid), Number(st.gid));
        fs.chmodSync(inode, Number(st.mode & 0o7777n));
        fs.utimesSync(inode, atime, mtime);
      });
    },
    fsyncDir: (rel) => dir.fsyncDir(abs(rel), (fd) => fs.fsyncSync(fd)),
  };
}

/** A message that names the file, whatever the error. */
function describe(rel: string, root: string, err: unknown): string {
  const full = path.join(root, rel);
  const msg = messageFor(err);
  return msg.includes(full) ? msg : `${full}: ${msg}`;
}

export async function copyTree(o: TreeCopyOptions): Promise<CopySummary> {
  const started = Date.now();
  const summary: CopySummary = {
    filesCopied: 0,
    filesSkipped: 0,
    filesFailed: 0,
    otherErrors: 0,
    symlinks: 0,
    dirs: 0,
    unsupported: 0,
    bytesCopied: 0,
    bytesVerified: 0,
    elapsedMs: 0,
    failures: [],
  };
  const controller = new AbortController();
  const { signal } = controller;
  let interrupted: 'SIGINT' | 'SIGTERM' | 'SIGHUP' | undefined;
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((name) => {
    const handler = (): void => {
      interrupted ??= name;
      controller.abort();
    };
    process.on(name, handler);
    return [name, handler] as const;
  });

  let progress: Progress | undefined;
  const tty = !o.quiet && process.stderr.isTTY === true;
  const say = (line: string): void => {
    // Start on a clean line when a progress line may be showing; it is redrawn on the next tick.
    process.stderr.write(`${tty ? '\r\x1b[K' : ''}${line}\n`);
  };
  const note = (line: string): void => {
    if (!o.quiet) say(`darefs: ${o.command}: ${line}`);
  };
  const fail = (rel: string, error: unknown, counts = true): void => {
    if (counts) summary.filesFailed++;
    else summary.otherErrors++;
    summary.failures.push({ rel, error });
    say(`darefs: ${o.command}: ${describe(rel, o.srcRoot, error)}`);
  };

  try {
    // ---- 1. walk ----
    const dirs: TreeEntry[] = [];
    const items: TreeEntry[] = [];
    const source = sourceReader(o);
    const dest = o.dstDir ? confinedWriter(o.dstDir) : pathWriter(o.dstRoot, o.createRoot);
    const rootStat = await source.lstat('');
    dirs.push({ rel: '', kind: 'dir', stat: rootStat });
    for (let i = 0; i < dirs.length; i++) {
      if (signal.aborted) break;
      const dir = dirs[i];
      let names: string[];
      try {
        names = (await source.readdir(dir.rel)).sort();
      } catch (err) {
        fail(dir.rel, err, false);
        continue;
      }
      for (const name of names) {
        if (name.startsWith(TEMP_PREFIX)) continue;
        if (dir.rel === '' && o.excludeAtRoot.has(name)) continue;
        const rel = dir.rel === '' ? name : path.join(dir.rel, name);
        let st: Stats;
        try {
          st = await source.lstat(rel);
        } catch (err) {
          fail(rel, err);
          continue;
        }
        const entry: TreeEntry = { rel, kind: kindOf(st), stat: st };
        if (entry.kind === 'dir') dirs.push(entry);
        else if (entry.kind === 'other') {
          summary.unsupported++;
          note(`${path.join(o.srcRoot, rel)}: not a regular file, directory or symlink: not copied`);
        } else items.push(entry);
      }
    }
    if (signal.aborted) throw new InterruptedError(interrupted);

    const files = items.filter((e) => e.kind === 'file');
    const totalBytes = files.reduce((n, e) => n + o.codec.progressBytes(e), 0);
    let filesDone = 0;
    const label = o.command;
    progress = new Progress({
      // Read on every redraw: the file count moves.
      get label() {
        return `${label}: ${filesDone}/${files.length} files`;
      },
      total: totalBytes,
      enabled: o.quiet ? false : undefined,
    });
    const prog = progress;

    // ---- 2. directories ----
    const failedDirs = new Set<string>();
    const under = (rel: string): boolean => {
      for (let d = path.dirname(rel); d !== '.' && d !== ''; d = path.dirname(d)) if (failedDirs.has(d)) return true;
      return false;
    };
    for (const d of dirs) {
      if (signal.aborted) break;
      if (d.rel !== '' && under(d.rel)) {
        failedDirs.add(d.rel);
        continue;
      }
      const dst = path.join(o.dstRoot, d.rel);
      try {
        const st = await dest.lstat(d.rel);
        if (st === undefined) {
          if (d.rel === '' && !o.createRoot) throw Object.assign(new Error(`${dst} does not exist`), { code: 'ENOENT', syscall: 'stat', path: dst });
          await dest.mkdir(d.rel);
        } else if (!st.isDirectory()) {
          throw new Error(`${dst} is in the way: it is not a directory; move it away and run again (the contents of ${path.join(o.srcRoot, d.rel)} were not copied)`);
        } else if (!isRoot() && (Number(st.mode) & 0o700) !== 0o700) {
          // A read-only directory from an earlier run: writable until step 4 sets its mode again.
          await dest.chmod(d.rel, Number(st.mode & 0o7777n) | 0o700);
        }
        await removeTemps(dest, d.rel);
        if (d.rel !== '') summary.dirs++;
      } catch (err) {
        failedDirs.add(d.rel);
        fail(d.rel, err, false);
      }
    }
    if (signal.aborted) throw new InterruptedError(interrupted);
    if (failedDirs.has('')) {
      summary.filesFailed += files.length;
      return summary;
    }

    // ---- 3. files and symlinks ----
    let next = 0;
    const worker = async (): Promise<void> => {
      while (!signal.aborted && next < items.length) {
        const e = items[next++];
        if (under(e.rel)) {
          if (e.kind === 'file') {
            summary.filesFailed++;
            filesDone++;
          }
          continue;
        }
        try {
          if (e.kind === 'symlink') await copySymlink(o, source, dest, e, summary);
          else await copyFile(o, dest, e, summary, prog, note, signal);
        } catch (err) {
          if (signal.aborted) break;
          if (e.kind === 'symlink') fail(e.rel, err, false);
          else fail(e.rel, err);
        }
        if (e.kind === 'file') filesDone++;
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, o.jobs) }, worker));
    if (signal.aborted) throw new InterruptedError(interrupted);

    // ---- 4. directory metadata, deepest first ----
    for (const d of [...dirs].reverse()) {
      if (d.rel === '' || failedDirs.has(d.rel)) continue;
      try {
        await dest.applyMetadata(d.rel, d.stat, 'dir');
      } catch (err) {
        fail(d.rel, err, false);
      }
    }
    return summary;
  } finally {
    progress?.stop();
    for (const [name, handler] of handlers) process.off(name, handler);
    summary.elapsedMs = Date.now() - started;
  }
}

/** Removes temp files an interrupted run left in the directory `rel`. */
async function removeTemps(dest: DestinationWriter, rel: string): Promise<void> {
  for (const name of await dest.readdir(rel)) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    const p = path.join(rel, name);
    const st = await dest.lstat(p);
    if (st !== undefined && !st.isDirectory()) await dest.unlink(p);
  }
}

async function copyFile(
  o: TreeCopyOptions,
  dest: DestinationWriter,
  e: TreeEntry,
  summary: CopySummary,
  progress: Progress,
  note: (line: string) => void,
  signal: AbortSignal,
): Promise<void> {
  const src = path.join(o.srcRoot, e.rel);
  const dst = path.join(o.dstRoot, e.rel);
  const bytes = o.codec.progressBytes(e);
  const want = o.codec.destinationSize(src, e);
  const existing = await dest.lstat(e.rel);
  if (existing?.isDirectory()) {
    throw new Error(`${dst} is in the way: it is a directory where ${src} goes; move it away and run again`);
  }
  if (existing?.isFile() && Number(existing.size) === want && sameTime(existing.mtimeNs, e.stat.mtimeNs)) {
    let counted = 0;
    const verdict = o.quick
      ? true
      : await o.codec.verify(src, dst, e, (n) => {
          counted += n;
          progress.add(n);
        }, signal);
    if (verdict === true) {
      if (o.quick) progress.add(bytes);
      else summary.bytesVerified += counted;
      // Verifying read the file: put its times (and mode, owner) back.
      await dest.applyMetadata(e.rel, e.stat, 'file');
      summary.filesSkipped++;
      return;
    }
    if (signal.aborted) return;
    progress.add(-counted);
    note(`${dst} has the right size and time but ${verdict}: copying it again`);
  }

  const tmp = tempNameFor(e.rel);
  const out = await dest.create(tmp);
  let written = 0;
  try {
    try {
      await o.codec.transform(src, out, e, (n) => {
        written += n;
        progress.add(n);
      }, signal);
      await out.sync();
      // On the descriptor: the file written, whatever its name leads to by now.
      await applyMetadataToHandle(out, e.stat);
    } finally {
      await out.close();
    }
    await dest.rename(tmp, e.rel);
  } catch (err) {
    progress.add(-written);
    await dest.unlink(tmp).catch(() => undefined);
    throw err;
  }
  dest.fsyncDir(parentOf(e.rel));
  summary.filesCopied++;
  summary.bytesCopied += bytes;
}

async function copySymlink(o: TreeCopyOptions, source: SourceReader, dest: DestinationWriter, e: TreeEntry, summary: CopySummary): Promise<void> {
  const src = path.join(o.srcRoot, e.rel);
  const dst = path.join(o.dstRoot, e.rel);
  const plain = await o.codec.sourceLinkTarget(await source.readlink(e.rel), src);
  const existing = await dest.lstat(e.rel);
  if (existing?.isDirectory()) throw new Error(`${dst} is in the way: it is a directory where the symlink ${src} goes; move it away and run again`);
  if (existing?.isSymbolicLink() && (await o.codec.destinationLinkHolds(await dest.readlink(e.rel), plain))) {
    await dest.applyMetadata(e.rel, e.stat, 'symlink');
    summary.symlinks++;
    return;
  }
  const target = await o.codec.destinationLinkTarget(plain);
  const tmp = tempNameFor(e.rel);
  await dest.symlink(target, tmp);
  try {
    await dest.applyMetadata(tmp, e.stat, 'symlink');
    await dest.rename(tmp, e.rel);
  } catch (err) {
    await dest.unlink(tmp).catch(() => undefined);
    throw err;
  }
  dest.fsyncDir(parentOf(e.rel));
  summary.symlinks++;
}

/** "7 files copied, 2 skipped (already complete), 0 failed; 1 symlink, 3 directories; 5.00 MiB written, 1.00 MiB verified in 2.0 s (3.00 MiB/s)" */
export function formatSummary(s: CopySummary): string {
  const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
  const secs = s.elapsedMs / 1000;
  const rate = secs > 0 ? ` (${formatBytes(Math.round((s.bytesCopied + s.bytesVerified) / secs))}/s)` : '';
  const time = secs < 60 ? `${secs.toFixed(1)} s` : formatDuration(secs);
  const verified = s.bytesVerified > 0 ? `, ${formatBytes(s.bytesVerified)} verified` : '';
  let line =
    `${plural(s.filesCopied, 'file')} copied, ${s.filesSkipped} skipped (already complete), ${s.filesFailed} failed; ` +
    `${plural(s.symlinks, 'symlink')}, ${plural(s.dirs, 'directory', 'directories')}; ` +
    `${formatBytes(s.bytesCopied)} written${verified} in ${time}${rate}`;
  if (s.otherErrors > 0) line += `; ${plural(s.otherErrors, 'other error')} (directories, symlinks)`;
  if (s.unsupported > 0) line += `; ${s.unsupported} special files not copied`;
  return line;
}

/** Real path of `p`, or of its nearest existing ancestor plus the rest (for a directory yet to be made). */
export async function realPathOf(p: string): Promise<string> {
  const abs = path.resolve(p);
  const rest: string[] = [];
  for (let cur = abs; ; cur = path.dirname(cur)) {
    try {
      return path.join(await fs.promises.realpath(cur), ...rest.reverse());
    } catch {
      if (cur === path.dirname(cur)) return abs;
      rest.push(path.basename(cur));
    }
  }
}

/** Whether `inner` is `outer` or below it (both real paths). */
export function isWithin(inner: string, outer: string): boolean {
  return inner === outer || inner.startsWith(outer.endsWith('/') ? outer : `${outer}/`);
}

// ---- streaming helpers for the codecs ----

/** Read size of source files, and the size writes are gathered to. */
export const IO_CHUNK = 1024 * 1024;

function abortError(): Error {
  return Object.assign(new Error('the operation was aborted'), { name: 'AbortError' });
}

/** Writes every chunk of `source` to `out` in ~1 MiB writes; stops when `signal` aborts. */
export async function writeAll(out: fs.promises.FileHandle, source: AsyncIterable<Buffer>, signal: AbortSignal): Promise<void> {
  let batch: Buffer[] = [];
  let batched = 0;
  const flush = async (): Promise<void> => {
    let buf = batch.length === 1 ? batch[0] : Buffer.concat(batch, batched);
    batch = [];
    batched = 0;
    while (buf.length > 0) {
      const { bytesWritten } = await out.write(buf, 0, buf.length);
      buf = buf.subarray(bytesWritten);
    }
  };
  for await (const chunk of source) {
    if (signal.aborted) throw abortError();
    batch.push(chunk);
    batched += chunk.length;
    if (batched >= IO_CHUNK) await flush();
  }
  if (batched > 0) await flush();
}

/** Yields `source`'s chunks, reporting each one's size first. */
export async function* counting(source: AsyncIterable<Buffer>, onBytes: (n: number) => void, signal: AbortSignal): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    if (signal.aborted) throw abortError();
    onBytes(chunk.length);
    yield chunk;
  }
}

/** A plain file's bytes in IO_CHUNK pieces. */
export function readPlain(file: string): fs.ReadStream {
  return fs.createReadStream(file, { highWaterMark: IO_CHUNK });
}
