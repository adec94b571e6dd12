import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { LRUCache } from 'lru-cache';
import {
  LONG_NAME_SUFFIX,
  MAX_CIPHER_NAME,
  NameError,
  NameKeys,
  decryptName,
  encryptName,
  entryName,
  isLongEntry,
  isLongNameFile,
  longEntryName,
  NAME_MAX,
} from '../dare';
import { CONFIG_DIR, nameKeys, readOpenFile, type VolumeConfig } from '../keys';
import { CipherDir } from './cipher-dir';
import { TEMP_PREFIX } from './cipher-file';
import { FileNameTooLongError, UnrepresentableNameError } from './errors';
import * as io from './io';
import { isPlainText, nameBytes, nameText } from './name-text';

/** A cipher-directory entry and the plaintext name it shows. */
export interface ListedEntry {
  /** Plaintext name, as name-text.ts writes names. */
  readonly name: string;
  /** The entry in the cipher directory. */
  readonly entry: string;
}

/** An entry that shows no plaintext name (FORMAT.md §8: listed nowhere, reported). */
export interface RefusedEntry {
  readonly entry: string;
  readonly reason: string;
}

export interface Listing {
  readonly entries: ListedEntry[];
  readonly refused: RefusedEntry[];
}

/**
 * How plaintext names become cipher-directory names, both ways. Every path given to or returned
 * by it is a cipher path as CipherDir takes them (absolute beneath its root, or relative). The
 * plaintext side is relative ('' for the root, 'a/b'), its names as name-text.ts writes them.
 */
export interface NameScheme {
  readonly encrypted: boolean;
  /** The cipher path (relative) of a plaintext path (relative). */
  toCipher(plainRel: string): string;
  /** The plaintext path of a cipher path (relative), for messages; what cannot be opened stays as it is. */
  toPlain(cipherRel: string): string;
  /** The plaintext entries of a cipher directory; darefs's own entries are never among them. */
  list(dir: CipherDir, cipherDirPath: string): Listing;
  /**
   * Before an entry is made at `cipherPath` (create, mkdir, symlink, mknod, link, rename to it):
   * a long name's `.name` file, durable (file and directory synced) before the entry can exist.
   */
  beforeEntry(dir: CipherDir, cipherPath: string): void;
  /** After the entry at `cipherPath` may have gone (unlink, rmdir, rename from it): its `.name` goes if it did. */
  afterRemoval(dir: CipherDir, cipherPath: string): void;
  /** Makes a new entry at `cipherPath` with `make`, between beforeEntry and (if it fails) afterRemoval. */
  makeEntry<T>(dir: CipherDir, cipherPath: string, make: () => T | Promise<T>): Promise<T>;
  /** Removes the entry at `cipherPath` with `remove` (unlink, rmdir), then what belongs to its name. */
  removeEntry(dir: CipherDir, cipherPath: string, remove: () => void): void;
  /**
   * Removes the directory at `cipherPath` (rmdir, through CipherDir). Orphan `.name` files (what a
   * crash can leave) do not make a directory the plaintext view shows empty ENOTEMPTY.
   */
  removeDirectory(dir: CipherDir, cipherPath: string): void;
  /** Renames `from` to `to` with `move` (replacing whatever `to` was). */
  moveEntry(dir: CipherDir, from: string, to: string, move: () => void): Promise<void>;
  /** Zeroes any key held. */
  dispose(): void;
}

function isOwnEntry(isRoot: boolean, entry: string): boolean {
  return (isRoot && entry === CONFIG_DIR) || entry.startsWith(TEMP_PREFIX);
}

/**
 * The order that keeps a long name and its `.name` file consistent through a crash at any point
 * (FORMAT.md §8): the `.name` file is durable before the entry exists, and goes only after the
 * entry is gone. A crash leaves at worst an orphan `.name` file, which fsck lists and removes.
 */
abstract class EntryOrder implements Pick<NameScheme, 'makeEntry' | 'removeEntry' | 'moveEntry' | 'removeDirectory'> {
  abstract beforeEntry(dir: CipherDir, cipherPath: string): void;
  abstract afterRemoval(dir: CipherDir, cipherPath: string): void;

  async makeEntry<T>(dir: CipherDir, cipherPath: string, make: () => T | Promise<T>): Promise<T> {
    this.beforeEntry(dir, cipherPath);
    try {
      return await make();
    } catch (err) {
      io.quietly(() => this.afterRemoval(dir, cipherPath));
      throw err;
    }
  }

  // Once the entry is gone or moved, the change has happened: a `.name` file left behind (it
  // could not be removed) is an orphan, harmless, and fsck's to report, not this call's to fail.
  removeEntry(dir: CipherDir, cipherPath: string, remove: () => void): void {
    remove();
    io.quietly(() => this.afterRemoval(dir, cipherPath));
  }

  async moveEntry(dir: CipherDir, from: string, to: string, move: () => void): Promise<void> {
    await this.makeEntry(dir, to, move);
    io.quietly(() => this.afterRemoval(dir, from));
  }

  removeDirectory(dir: CipherDir, cipherPath: string): void {
    const rmdir = (): void => dir.at(cipherPath, io.rmdirSync);
    try {
      rmdir();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' || !this.dropOrphans(dir, cipherPath)) throw err;
      rmdir();
    }
    io.quietly(() => this.afterRemoval(dir, cipherPath));
  }

  /** Removes the directory's orphan `.name` files if they are all it holds; whether it did. */
  protected dropOrphans(_dir: CipherDir, _cipherPath: string): boolean {
    return false;
  }
}

/** Names as they are: the cipher directory shows them (the default, and ncrypt mode). */
export class PlainNames extends EntryOrder implements NameScheme {
  readonly encrypted = false;

  toCipher(plainRel: string): string {
    if (!isPlainText(plainRel)) throw new UnrepresentableNameError(plainRel);
    return plainRel;
  }

  toPlain(cipherRel: string): string {
    return cipherRel;
  }

  list(dir: CipherDir, cipherDirPath: string): Listing {
    const isRoot = dir.relative(cipherDirPath) === '';
    const entries = dir
      .readdir(cipherDirPath)
      .filter((e) => !isOwnEntry(isRoot, e))
      .map((e) => ({ name: e, entry: e }));
    return { entries, refused: [] };
  }

  beforeEntry(): void {}

  afterRemoval(): void {}

  dispose(): void {}
}

/** The name scheme of a volume with this config, unlocked with `masterKey` (the caller still zeroes it). */
export function nameSchemeOf(config: VolumeConfig, masterKey: Buffer): NameScheme {
  return config.names === 'encrypted' ? new EncryptedNames(nameKeys(masterKey)) : new PlainNames();
}

/** Names each cipher directory keeps mapped, both ways (a plaintext name is at most 255 bytes). */
const NAME_CACHE_ENTRIES = 16384;

/**
 * Encrypted names (FORMAT.md §8). A lookup derives the cipher name (no scan: both directions
 * are cached, so `ls -lR` decrypts each name once and looks it up without a second HMAC); a
 * listing opens every name and leaves out, and reports, those that do not authenticate.
 */
export class EncryptedNames extends EntryOrder implements NameScheme {
  readonly encrypted = true;
  /** plaintext name -> its entry name. */
  private readonly toEntry = new LRUCache<string, string>({ max: NAME_CACHE_ENTRIES });
  /** entry name (short ones only: a long one's meaning is in its file) -> plaintext name. */
  private readonly fromEntry = new LRUCache<string, string>({ max: NAME_CACHE_ENTRIES });
  /** long entry name -> the full cipher name its `.name` file holds. */
  private readonly longNames = new LRUCache<string, string>({ max: 1024 });

  constructor(private readonly keys: NameKeys) {
    super();
  }

  dispose(): void {
    this.keys.mac.fill(0);
    this.keys.enc.fill(0);
    this.toEntry.clear();
    this.fromEntry.clear();
    this.longNames.clear();
  }

  /** The full cipher name of one plaintext name (not shortened). */
  cipherName(name: string): string {
    const bytes = nameBytes(name);
    // The kernel leaves NAME_MAX to the file system: a longer name would fit as a long name.
    if (bytes.length > NAME_MAX) throw new FileNameTooLongError(bytes.length);
    return encryptName(this.keys, bytes);
  }

  /**
   * The plaintext text of a full cipher name; NameError unless it authenticates. Not checked as
   * a directory entry (an extended attribute name may hold '/'), not cached.
   */
  openName(cipherName: string): string {
    return nameText(decryptName(this.keys, cipherName));
  }

  /** The entry name of one plaintext name. */
  entryOf(name: string): string {
    let e = this.toEntry.get(name);
    if (e === undefined) {
      const full = this.cipherName(name);
      e = entryName(full);
      this.toEntry.set(name, e);
      if (isLongEntry(e)) this.longNames.set(e, full);
      else this.fromEntry.set(e, name);
    }
    return e;
  }

  toCipher(plainRel: string): string {
    if (plainRel === '') return '';
    return plainRel
      .split('/')
      .map((n) => this.entryOf(n))
      .join('/');
  }

  toPlain(cipherRel: string): string {
    if (cipherRel === '') return '';
    return cipherRel
      .split('/')
      .map((e) => {
        if (isLongEntry(e)) return e;
        try {
          return this.openEntry(e);
        } catch {
          return e;
        }
      })
      .join('/');
  }

  /** The plaintext name of a short entry; NameError unless it authenticates. */
  private openEntry(entry: string): string {
    let name = this.fromEntry.get(entry);
    if (name === undefined) {
      name = checkedName(entry, nameText(decryptName(this.keys, entry)));
      this.fromEntry.set(entry, name);
      this.toEntry.set(name, entry);
    }
    return name;
  }

  /** The plaintext name of an entry of `dirPath`; NameError (or an fs error) when it has none. */
  openIn(dir: CipherDir, dirPath: string, entry: string): string {
    if (!isLongEntry(entry)) return this.openEntry(entry);
    const full = readNameFile(dir, nodePath.join(dirPath, entry + LONG_NAME_SUFFIX));
    if (full === undefined) throw new NameError(entry, `has no ${LONG_NAME_SUFFIX} file beside it`);
    if (longEntryName(full) !== entry) throw new NameError(entry, `has a ${LONG_NAME_SUFFIX} file that holds another name`);
    const name = checkedName(full, nameText(decryptName(this.keys, full)));
    this.toEntry.set(name, entry);
    this.longNames.set(entry, full);
    return name;
  }

  list(dir: CipherDir, cipherDirPath: string): Listing {
    const isRoot = dir.relative(cipherDirPath) === '';
    const entries: ListedEntry[] = [];
    const refused: RefusedEntry[] = [];
    for (const entry of dir.readdir(cipherDirPath)) {
      if (isOwnEntry(isRoot, entry) || isLongNameFile(entry)) continue;
      try {
        entries.push({ name: this.openIn(dir, cipherDirPath, entry), entry });
      } catch (err) {
        refused.push({ entry, reason: err instanceof NameError ? err.reason : err instanceof Error ? err.message : String(err) });
      }
    }
    return { entries, refused };
  }

  beforeEntry(dir: CipherDir, cipherPath: string): void {
    const entry = nodePath.basename(cipherPath);
    if (!isLongEntry(entry)) return;
    const parent = nodePath.dirname(cipherPath);
    // toCipher made this entry name moments ago, so its full name is cached.
    const full = this.longNames.get(entry);
    if (full === undefined || longEntryName(full) !== entry) throw new Error(`${cipherPath}: long name not known (internal error)`);
    writeNameFile(dir, parent, entry + LONG_NAME_SUFFIX, full);
  }

  protected override dropOrphans(dir: CipherDir, cipherPath: string): boolean {
    const entries = dir.readdir(cipherPath);
    const orphan = (e: string): boolean => isLongNameFile(e) && !entries.includes(e.slice(0, -LONG_NAME_SUFFIX.length));
    if (entries.length === 0 || !entries.every(orphan)) return false;
    for (const e of entries) dir.at(nodePath.join(cipherPath, e), io.removeSync);
    return true;
  }

  afterRemoval(dir: CipherDir, cipherPath: string): void {
    const entry = nodePath.basename(cipherPath);
    if (!isLongEntry(entry)) return;
    try {
      dir.lstat(cipherPath);
      return; // still there (a rename onto another name of the same inode does nothing)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    // An orphan .name left by a crash before this point is harmless: fsck lists it.
    dir.at(nodePath.join(nodePath.dirname(cipherPath), entry + LONG_NAME_SUFFIX), io.removeSync);
  }
}

/** An authenticated name is one we sealed; checked anyway before it reaches the kernel. */
function checkedName(stored: string, name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new NameError(stored, 'opens to a name no directory can hold');
  }
  return name;
}

/** A long name's `.name` file: its full cipher name; undefined when there is none. */
export function readNameFile(dir: CipherDir, file: string): string | undefined {
  let fd: number;
  try {
    fd = dir.openFile(file, fs.constants.O_RDONLY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    // One byte more than any cipher name: what reads that far is not one.
    const held = readOpenFile(fd, MAX_CIPHER_NAME + 1);
    if (held.length > MAX_CIPHER_NAME) throw new NameError(nodePath.basename(file), `is longer than any cipher name (${MAX_CIPHER_NAME} bytes)`);
    return held.toString('latin1');
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes a long name's `.name` file durably: beside it under a temporary name, synced, renamed
 * into place, and the directory synced, so the entry it names (linked after this returns) never
 * exists without it after a power cut. One already there holding the same name is kept.
 */
export function writeNameFile(dir: CipherDir, parent: string, file: string, full: string): void {
  const target = nodePath.join(parent, file);
  try {
    if (readNameFile(dir, target) === full) return;
  } catch (err) {
    // Not a regular file, or holding junk: replaced below (rename does not follow a symlink).
    if (!(err instanceof NameError) && !isRefusal(err)) throw err;
  }
  const tmp = nodePath.join(parent, `${TEMP_PREFIX}${crypto.randomBytes(8).toString('hex')}`);
  // O_RDWR, not O_WRONLY: the tests' power-cut model reads what a sync makes durable.
  const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL;
  const fd = io.createSync(tmp, flags, 0o644, (f, fl, m) => dir.openFile(f, fl, m));
  try {
    const data = Buffer.from(full, 'latin1');
    for (let done = 0; done < data.length; ) done += io.writeSync(fd, data, done, data.length - done, done, tmp);
    io.fsyncSync(fd, tmp);
  } catch (err) {
    fs.closeSync(fd);
    io.quietly(() => dir.at(tmp, io.removeSync));
    throw err;
  }
  fs.closeSync(fd);
  try {
    dir.at2(tmp, target, io.renameSync);
  } catch (err) {
    io.quietly(() => dir.at(tmp, io.removeSync));
    throw err;
  }
  dir.fsyncDir(parent, (fd2, what) => io.fsyncSync(fd2, what));
}

function isRefusal(err: unknown): boolean {
  const name = err instanceof Error ? err.name : '';
  return name === 'NotRegularFileError' || name === 'UnsafePathError';
}
