// Copies a whole directory tree through a per-file transformation (encrypt for
// `import`, decrypt for `export`): the engine both commands share.
//
//   1. walk the source (lstat only; never follows symlinks; a cipher directory through its
//      CipherDir, confined), skipping temp files and the names the command excludes at the
//      root (.darefs), each name mapped through the volume's name scheme (tree-io.ts);
//   2. create the destination directories (owner-writable for now) and remove temp files a
//      killed run left in them (a cipher directory through its CipherDir, confined: see
//      DestinationWriter);
//   3. files and symlinks, `jobs` at a time: an existing destination that is complete and
//      verified is skipped; anything else is written to TEMP_PREFIX+random beside its target,
//      fsynced, given its mode/owner/times, renamed over the target (a long cipher name's
//      `.name` file durable before that), and the directory fsynced, so a real name never holds
//      a half-written file;
//   4. directory modes, owners and times, deepest first (writing into a directory changes its
//      mtime, so these come last).
// A file that fails is reported on stderr and the copy goes on; the caller decides the exit code.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TEMP_PREFIX, type CipherDir, type NameScheme } from '../store';
import { InterruptedError, messageFor } from './errors';
import { formatBytes, formatDuration, Progress } from './progress';
import {
  applyMetadataToHandle,
  cipherTreeReader,
  confinedWriter,
  fsPath,
  isRoot,
  pathWriter,
  plainTreeReader,
  type DestinationWriter,
  type ListedSource,
  type SourceReader,
} from './tree-io';

type Stats = fs.BigIntStats;

export interface TreeEntry {
  /** Path relative to the source tree's root ('' for the root), names as name-text.ts writes them. */
  readonly rel: string;
  /** Path of its copy relative to the destination tree's root: `rel` with every name mapped. */
  readonly dst: string;
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
  /**
   * The volume's name scheme (FORMAT.md §8): what each plaintext name is called in the cipher
   * directory (srcDir or dstDir). Plain names (and ncrypt mode) keep names as they are.
   */
  names: NameScheme;
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

/** Temp name beside `target`: hidden from the plaintext view, removed by the next run if left over. */
export function tempNameFor(target: string): string {
  return path.join(path.dirname(target), `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
}

/** The directory holding `rel` ('' for the root). */
function parentOf(rel: string): string {
  const d = path.dirname(rel);
  return d === '.' ? '' : d;
}

function kindOf(st: Stats): TreeEntry['kind'] {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

/**
 * A message that names the source entry, whatever the error; and its plaintext path when the
 * source is a cipher directory with encrypted names (whose paths say nothing to the user).
 */
function describe(full: string, plain: string | undefined, err: unknown): string {
  const msg = messageFor(err);
  const named = msg.includes(full) ? msg : `${full}: ${msg}`;
  return plain === undefined ? named : `${named} (${plain} in the plaintext view)`;
}

function sourceReader(o: TreeCopyOptions): SourceReader {
  return o.srcDir ? cipherTreeReader(o.srcDir, o.names, o.excludeAtRoot) : plainTreeReader(o.srcRoot, o.names, o.excludeAtRoot);
}

/** `rel` and `name` joined ('' is the root). */
function child(rel: string, name: string): string {
  return rel === '' ? name : path.join(rel, name);
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
  const showsPlain = o.srcDir !== undefined && o.names.encrypted;
  /** `at`: the source entry; its destination path when it has one. */
  const fail = (at: { rel: string; dst?: string }, error: unknown, counts = true): void => {
    if (counts) summary.filesFailed++;
    else summary.otherErrors++;
    summary.failures.push({ rel: at.rel, error });
    const plain = showsPlain && at.dst !== undefined && at.dst !== '' ? at.dst : undefined;
    say(`darefs: ${o.command}: ${describe(path.join(o.srcRoot, at.rel), plain, error)}`);
  };

  try {
    // ---- 1. walk ----
    const dirs: TreeEntry[] = [];
    const items: TreeEntry[] = [];
    const source = sourceReader(o);
    const dest = o.dstDir ? confinedWriter(o.dstDir, o.names) : pathWriter(o.dstRoot, o.createRoot);
    const rootStat = await source.lstat('');
    dirs.push({ rel: '', dst: '', kind: 'dir', stat: rootStat });
    for (let i = 0; i < dirs.length; i++) {
      if (signal.aborted) break;
      const dir = dirs[i];
      let listed: ListedSource[];
      try {
        listed = (await source.list(dir.rel)).sort((a, b) => (a.src < b.src ? -1 : a.src > b.src ? 1 : 0));
      } catch (err) {
        fail(dir, err, false);
        continue;
      }
      for (const item of listed) {
        const rel = child(dir.rel, item.src);
        if ('error' in item) {
          // Not copied, named: a name that does not open, or one this volume cannot hold. Its
          // kind, when it has one, only decides how it counts.
          const st = await source.lstat(rel).catch(() => undefined);
          fail({ rel }, item.error, st === undefined || !(st.isDirectory() || st.isSymbolicLink()));
          continue;
        }
        const dst = child(dir.dst, item.dst);
        let st: Stats;
        try {
          st = await source.lstat(rel);
        } catch (err) {
          fail({ rel, dst }, err);
          continue;
        }
        const entry: TreeEntry = { rel, dst, kind: kindOf(st), stat: st };
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
      const dst = path.join(o.dstRoot, d.dst);
      try {
        if (d.rel !== '') dest.prepareEntry(d.dst, path.basename(d.rel));
        const st = await dest.lstat(d.dst);
        if (st === undefined) {
          if (d.rel === '' && !o.createRoot) throw Object.assign(new Error(`${dst} does not exist`), { code: 'ENOENT', syscall: 'stat', path: dst });
          await dest.mkdir(d.dst);
        } else if (!st.isDirectory()) {
          throw new Error(`${dst} is in the way: it is not a directory; move it away and run again (the contents of ${path.join(o.srcRoot, d.rel)} were not copied)`);
        } else if (!isRoot() && (Number(st.mode) & 0o700) !== 0o700) {
          // A read-only directory from an earlier run: writable until step 4 sets its mode again.
          await dest.chmod(d.dst, Number(st.mode & 0o7777n) | 0o700);
        }
        await removeTemps(dest, d.dst);
        if (d.rel !== '') summary.dirs++;
      } catch (err) {
        failedDirs.add(d.rel);
        fail(d, err, false);
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
          fail(e, err, e.kind !== 'symlink');
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
        await dest.applyMetadata(d.dst, d.stat, 'dir');
      } catch (err) {
        fail(d, err, false);
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
  const dst = path.join(o.dstRoot, e.dst);
  const bytes = o.codec.progressBytes(e);
  const want = o.codec.destinationSize(src, e);
  const existing = await dest.lstat(e.dst);
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
      await dest.applyMetadata(e.dst, e.stat, 'file');
      // A long name's `.name` file a crash or a hand took away comes back.
      dest.prepareEntry(e.dst, path.basename(e.rel));
      summary.filesSkipped++;
      return;
    }
    if (signal.aborted) return;
    progress.add(-counted);
    note(`${dst} has the right size and time but ${verdict}: copying it again`);
  }

  const tmp = tempNameFor(e.dst);
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
    dest.prepareEntry(e.dst, path.basename(e.rel));
    await dest.rename(tmp, e.dst);
  } catch (err) {
    progress.add(-written);
    await dest.unlink(tmp).catch(() => undefined);
    throw err;
  }
  dest.fsyncDir(parentOf(e.dst));
  summary.filesCopied++;
  summary.bytesCopied += bytes;
}

async function copySymlink(o: TreeCopyOptions, source: SourceReader, dest: DestinationWriter, e: TreeEntry, summary: CopySummary): Promise<void> {
  const src = path.join(o.srcRoot, e.rel);
  const dst = path.join(o.dstRoot, e.dst);
  const plain = await o.codec.sourceLinkTarget(await source.readlink(e.rel), src);
  const existing = await dest.lstat(e.dst);
  if (existing?.isDirectory()) throw new Error(`${dst} is in the way: it is a directory where the symlink ${src} goes; move it away and run again`);
  if (existing?.isSymbolicLink() && (await o.codec.destinationLinkHolds(await dest.readlink(e.dst), plain))) {
    await dest.applyMetadata(e.dst, e.stat, 'symlink');
    dest.prepareEntry(e.dst, path.basename(e.rel));
    summary.symlinks++;
    return;
  }
  const target = await o.codec.destinationLinkTarget(plain);
  const tmp = tempNameFor(e.dst);
  await dest.symlink(target, tmp);
  try {
    await dest.applyMetadata(tmp, e.stat, 'symlink');
    dest.prepareEntry(e.dst, path.basename(e.rel));
    await dest.rename(tmp, e.dst);
  } catch (err) {
    await dest.unlink(tmp).catch(() => undefined);
    throw err;
  }
  dest.fsyncDir(parentOf(e.dst));
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
  return fs.createReadStream(fsPath(file), { highWaterMark: IO_CHUNK });
}
