// CIPHERDIR/.darefs, the volume's own metadata (config, journal), as darefs may use it
// (FORMAT.md §6): the cipher directory is hostile, so .darefs must be a real directory (never a
// symlink followed to wherever it points), owned by the user darefs runs as and writable by no one
// else (whoever else could write there could plant a journal or a config), and the files in it
// regular files opened O_NOFOLLOW. Every reader and writer of .darefs goes through here: config.ts
// here, the journal (src/store) through checkMetaDirStat on its confined descriptor.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { O_CLOEXEC, O_PATH } from '../sys';
import { ConfigError } from './errors';

/** The name of the metadata directory (config.ts's CONFIG_DIR; that module imports this one). */
const META_DIR = '.darefs';
const { O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;

/** `.darefs` (or a file in it) is not what darefs may safely use; the message says what to do. */
export class UnsafeMetaDirError extends ConfigError {
  constructor(where: string, why: string) {
    super(where, `${where} ${why}`);
  }
}

/**
 * Throws UnsafeMetaDirError unless `st` (an lstat or fstat that did not follow a symlink) is a
 * directory owned by the effective user and not writable by group or others.
 */
export function checkMetaDirStat(st: fs.Stats, where: string): void {
  if (st.isSymbolicLink()) {
    throw new UnsafeMetaDirError(
      where,
      'is a symlink: darefs never follows one there (its journal and config would be written wherever it points); ' +
        'remove the symlink (if the directory it points to is the volume\'s own, move that directory here instead)',
    );
  }
  if (!st.isDirectory()) throw new UnsafeMetaDirError(where, 'is not a directory: move it away (darefs keeps its config and journal there)');
  const euid = process.geteuid?.() ?? st.uid;
  if (st.uid !== euid) {
    throw new UnsafeMetaDirError(
      where,
      `is owned by uid ${st.uid}, not by the user darefs runs as (uid ${euid}): whoever owns it could plant a journal or config there; ` +
        `if it is yours, \`chown ${euid} ${where}\`, else remove it`,
    );
  }
  if ((st.mode & 0o022) !== 0) {
    throw new UnsafeMetaDirError(
      where,
      `is writable by ${st.mode & 0o020 ? 'its group' : ''}${(st.mode & 0o022) === 0o022 ? ' and ' : ''}${st.mode & 0o002 ? 'others' : ''} ` +
        `(mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): anyone who can write there could plant a journal or config; \`chmod go-w ${where}\``,
    );
  }
}

/** An open, checked `.darefs`. */
export interface MetaDir {
  /** O_PATH descriptor of the directory: names in it are looked up as `${at}/${name}`. */
  readonly fd: number;
  /** `/proc/self/fd/<fd>`: the directory itself, wherever it is moved or whatever replaces its name. */
  readonly at: string;
  /** Its path, for messages. */
  readonly path: string;
  /** Made by this call. */
  readonly created: boolean;
  close(): void;
}

/**
 * Opens CIPHERDIR/.darefs without following it and checks it (checkMetaDirStat); undefined when
 * it does not exist, unless `create` (then it is made, mode 0700). The cipher directory itself is
 * the user's own path, taken as given.
 */
export function openMetaDir(cipherDir: string, opts: { create?: boolean } = {}): MetaDir | undefined {
  const where = path.join(cipherDir, META_DIR);
  let created = false;
  let fd: number;
  for (;;) {
    try {
      // O_PATH with O_NOFOLLOW opens a symlink itself: the fstat below then refuses it.
      fd = fs.openSync(where, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && opts.create && !created) {
        try {
          // mkdir never follows a symlink at its last component (EEXIST): one raced in is refused below.
          fs.mkdirSync(where, { mode: 0o700 });
          created = true;
        } catch (mkErr) {
          if ((mkErr as NodeJS.ErrnoException).code !== 'EEXIST') throw metaError(where, 'cannot create', mkErr);
        }
        continue;
      }
      if (code === 'ENOENT') return undefined;
      throw metaError(where, 'cannot open', err);
    }
  }
  try {
    checkMetaDirStat(fs.fstatSync(fd), where);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return { fd, at: `/proc/self/fd/${fd}`, path: where, created, close: () => fs.closeSync(fd) };
}

/**
 * Opens the file `name` of an open `.darefs` without following a symlink and without blocking (a
 * FIFO planted there); anything but a regular file is refused. ENOENT is thrown as the system's.
 */
export function openMetaFile(meta: MetaDir, name: string, flags: number, mode = 0o600): number {
  const where = path.join(meta.path, name);
  let fd: number;
  try {
    fd = fs.openSync(`${meta.at}/${name}`, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new UnsafeMetaDirError(where, 'is a symlink: darefs never follows one in .darefs (it would read or write wherever it points); remove it');
    }
    throw err;
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new UnsafeMetaDirError(where, 'is not a regular file: remove it');
  }
  return fd;
}

/**
 * The bytes of CIPHERDIR/.darefs/`name` (checked as openMetaDir and openMetaFile do), or null when
 * .darefs or the file does not exist. Bigger than `maxBytes`: a ConfigError.
 */
export function readMetaFile(cipherDir: string, name: string, maxBytes: number, what = 'volume config'): Buffer | null {
  const meta = openMetaDir(cipherDir);
  if (meta === undefined) return null;
  try {
    return readMetaFileIn(meta, name, maxBytes, what);
  } finally {
    meta.close();
  }
}

/** readMetaFile in an open `.darefs`. */
export function readMetaFileIn(meta: MetaDir, name: string, maxBytes: number, what = 'volume config'): Buffer | null {
  const where = path.join(meta.path, name);
  let fd: number;
  try {
    fd = openMetaFile(meta, name, O_RDONLY);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw metaError(where, `cannot read ${what}`, err);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size > maxBytes) throw new ConfigError(where, `${where} is ${size} bytes, too large for a ${what}`);
    return readOpenFile(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes `data` as a new file `name` in an open `.darefs`, replacing whatever entry had that name
 * (unlinked first, never written through: a symlink planted there points nowhere darefs writes),
 * and makes it durable.
 */
export function writeMetaFileFresh(meta: MetaDir, name: string, data: Buffer | string): void {
  try {
    fs.unlinkSync(`${meta.at}/${name}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const fd = openMetaFile(meta, name, O_WRONLY | O_CREAT | O_EXCL, 0o600);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function metaError(where: string, what: string, err: unknown): ConfigError {
  return new ConfigError(where, `${what} ${where}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
}

/** The first `size` bytes of the open file `fd` (fewer if it is shorter by now). */
export function readOpenFile(fd: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  let got = 0;
  while (got < size) {
    const n = fs.readSync(fd, buf, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}
