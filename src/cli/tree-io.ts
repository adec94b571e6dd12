// How tree-copy.ts reads its source tree and writes its destination tree: the user's own
// plaintext tree by path, a cipher directory confined beneath its CipherDir (FORMAT.md §6). Every
// name crosses between the two through the volume's name scheme (FORMAT.md §8): import maps a
// plaintext name to its cipher entry name, export lists a cipher directory through the scheme.
//
// Paths here are relative to a tree's root, their names as name-text.ts writes them (a name that
// is not UTF-8 holds U+DC80..U+DCFF for its odd bytes); fsPath turns one into what node:fs takes.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { CipherDir, isPlainText, nameBytes, nameText, TEMP_PREFIX, UnsafePathError, type NameScheme } from '../store';
import { CliError, isErrno } from './errors';
import { ExitCode } from './exit-codes';

type Stats = fs.BigIntStats;

/** The form node:fs takes for a path whose names are written as name-text.ts writes them. */
export function fsPath(p: string): string | Buffer {
  return isPlainText(p) ? p : nameBytes(p);
}

/** A cipher-directory entry whose name does not open (FORMAT.md §8): it is not exported. */
export class RefusedNameError extends CliError {
  constructor(reason: string) {
    // Modified, as a package or a sealed symlink target that does not authenticate.
    super(`${reason}: not exported (its name does not open to a plaintext name)`, ExitCode.CORRUPTED);
  }
}

/** A name of a plain-names cipher directory that is not UTF-8: node:fs cannot reach it by a string path. */
export class NotUtf8NameError extends CliError {
  constructor(name: string) {
    super(`the name ${JSON.stringify(name)} is not UTF-8: darefs cannot read it in a volume with plain names; rename it to export it`, ExitCode.ERROR);
  }
}

/** One entry of a source directory: the name its copy gets, or why it gets none. */
export type ListedSource = { readonly src: string; readonly dst: string } | { readonly src: string; readonly error: unknown };

export interface SourceReader {
  /** The entries of the source directory `rel` (neither temp files nor the names skipped at the root). */
  list(rel: string): Promise<ListedSource[]>;
  lstat(rel: string): Promise<Stats>;
  readlink(rel: string): Promise<Buffer>;
}

/** Names left out at every level (temp files) and at the root, each of the others mapped by `map`. */
function mapNames(names: string[], rel: string, skipAtRoot: ReadonlySet<string>, map: (name: string) => string): ListedSource[] {
  const out: ListedSource[] = [];
  for (const name of names) {
    if (name.startsWith(TEMP_PREFIX) || (rel === '' && skipAtRoot.has(name))) continue;
    try {
      out.push({ src: name, dst: map(name) });
    } catch (err) {
      out.push({ src: name, error: err });
    }
  }
  return out;
}

/**
 * The user's plaintext tree (import's source): read by path, names as bytes, each mapped to the
 * cipher entry name it gets (a plain-names volume refuses a name that is not UTF-8, by entry).
 */
export function plainTreeReader(root: string, names: NameScheme, skipAtRoot: ReadonlySet<string>): SourceReader {
  const at = (rel: string): string | Buffer => fsPath(path.join(root, rel));
  return {
    async list(rel) {
      const raw = await fs.promises.readdir(at(rel), { encoding: 'buffer' });
      return mapNames(raw.map(nameText), rel, skipAtRoot, (name) => names.toCipher(name));
    },
    lstat: (rel) => fs.promises.lstat(at(rel), { bigint: true }),
    readlink: (rel) => fs.promises.readlink(at(rel), { encoding: 'buffer' }),
  };
}

/**
 * A cipher directory (export's source), confined: nothing planted there is followed. With
 * encrypted names it is listed through the scheme, so darefs's own entries (.darefs, temp files,
 * `.name` files) never show, and an entry whose name does not open is reported, not exported.
 */
export function cipherTreeReader(dir: CipherDir, names: NameScheme, skipAtRoot: ReadonlySet<string>): SourceReader {
  return {
    async list(rel) {
      if (!names.encrypted) {
        return mapNames(dir.readdir(rel), rel, skipAtRoot, (name) => {
          if (!isPlainText(name)) throw new NotUtf8NameError(name);
          return name;
        });
      }
      const { entries, refused } = names.list(dir, dir.absolute(rel));
      return [
        ...entries.map((e) => ({ src: e.entry, dst: e.name })),
        ...refused.map((r) => ({ src: r.entry, error: new RefusedNameError(`cipher name ${shortened(r.entry)} ${r.reason}`) })),
      ];
    },
    lstat: async (rel) => dir.lstat(rel, { bigint: true }),
    readlink: async (rel) => dir.at(rel, (e) => fs.readlinkSync(e, { encoding: 'buffer' })),
  };
}

function shortened(entry: string): string {
  return JSON.stringify(entry.length > 80 ? `${entry.slice(0, 77)}...` : entry);
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

export function seconds(ns: bigint): number {
  return Number(ns / 1_000_000_000n) + Number(ns % 1_000_000_000n) / 1e9;
}

/**
 * How the copy touches the destination tree, by paths relative to its root: by path (export's
 * plaintext destination, the user's own directory) or confined beneath a CipherDir (import).
 */
export interface DestinationWriter {
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
  applyMetadata(rel: string, st: Stats, kind: 'dir' | 'file' | 'symlink'): Promise<void>;
  /** fsync of the directory `rel` (a new name in it is durable). */
  fsyncDir(rel: string): void;
  /**
   * Before the entry `rel`, the copy of the source entry named `sourceName`, is linked (and
   * before one already there is kept): a long cipher name's `.name` file, durable (FORMAT.md §8).
   */
  prepareEntry(rel: string, sourceName: string): void;
}

/** Owner (when root), mode and times of an open file from `st`. */
export async function applyMetadataToHandle(h: fs.promises.FileHandle, st: Stats): Promise<void> {
  // chown first: it clears set-user-ID and set-group-ID bits that chmod then puts back.
  if (isRoot()) await h.chown(Number(st.uid), Number(st.gid));
  await h.chmod(Number(st.mode & 0o7777n));
  await h.utimes(seconds(st.atimeNs), seconds(st.mtimeNs));
}

async function lstatOrUndefined(p: string | Buffer): Promise<Stats | undefined> {
  try {
    return await fs.promises.lstat(p, { bigint: true });
  } catch (err) {
    if (isErrno(err) && err.code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The user's plaintext tree (export's destination), by path; any name, UTF-8 or not. */
export function pathWriter(root: string, createRoot: boolean): DestinationWriter {
  const at = (rel: string): string | Buffer => fsPath(path.join(root, rel));
  return {
    lstat: (rel) => lstatOrUndefined(at(rel)),
    mkdir: async (rel) => {
      await fs.promises.mkdir(at(rel), { mode: 0o700, recursive: rel === '' && createRoot });
    },
    chmod: (rel, mode) => fs.promises.chmod(at(rel), mode),
    readdir: async (rel) => (await fs.promises.readdir(at(rel), { encoding: 'buffer' })).map(nameText),
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
    fsyncDir(rel) {
      const fd = fs.openSync(at(rel), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    },
    prepareEntry: () => undefined,
  };
}

/**
 * The destination as a cipher directory (import): every path resolved beneath `dir` with no
 * symlink (CipherDir), calls by path only through `at` (never following the last component) or
 * on the inode already opened. Errors name the cipher path (CipherDir sees to that).
 */
export function confinedWriter(dir: CipherDir, names: NameScheme): DestinationWriter {
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
    async applyMetadata(rel, st, kind) {
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
      inodeOf(rel, kind, (inode) => {
        if (isRoot()) fs.chownSync(inode, Number(st.uid), Number(st.gid));
        fs.chmodSync(inode, Number(st.mode & 0o7777n));
        fs.utimesSync(inode, atime, mtime);
      });
    },
    fsyncDir: (rel) => dir.fsyncDir(abs(rel), (fd) => fs.fsyncSync(fd)),
    prepareEntry(rel, sourceName) {
      // The source of a cipher directory is a plaintext tree: its name is the plaintext name.
      // Derived again here rather than remembered from the walk: the scheme keeps only so many
      // long names, and beforeEntry needs this one's.
      if (names.toCipher(sourceName) !== path.basename(rel)) {
        throw new Error(`${abs(rel)} is not the cipher entry of ${JSON.stringify(sourceName)} (internal error)`);
      }
      names.beforeEntry(dir, abs(rel));
    },
  };
}
