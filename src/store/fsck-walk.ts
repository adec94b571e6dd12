import * as fs from 'node:fs';
import { LONG_NAME_SUFFIX, isLongEntry, isLongNameFile } from '../dare';
import { CipherDir } from './cipher-dir';
import { TEMP_PREFIX } from './cipher-file';
import { NameScheme } from './names';

/** A file or symlink of the cipher directory that fsck checks. */
export interface WalkedFile {
  /** Cipher path, relative to the cipher directory. */
  rel: string;
  /** Plaintext path (encrypted names only), when every name on the way authenticates. */
  plain?: string;
  size: number;
  temp: boolean;
  symlink: boolean;
}

/**
 * What fsck finds wrong with a name on an encrypted-names volume (FORMAT.md §8):
 * - unauthenticated: an entry whose cipher name does not open (forged, damaged, another
 *   volume's, or not a cipher name at all); the mount lists it nowhere
 * - long-name: a long-name entry whose `.name` file is missing, holds a name with another hash,
 *   or holds a name that does not authenticate; the mount lists it nowhere
 * - orphan: a `.name` file with no entry beside it, what a crash between writing the `.name`
 *   file and linking the entry leaves; harmless (information), --repair removes it
 */
export type FsckNameStatus = 'unauthenticated' | 'long-name' | 'orphan';

export interface FsckName {
  /** Cipher path of the entry, relative to the cipher directory. */
  path: string;
  /** Cipher path of its directory ('' for the root). */
  dir: string;
  /** Plaintext path of its directory ('' for the root), when every name on the way authenticates. */
  plainDir?: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  status: FsckNameStatus;
  message: string;
  /** An orphan `.name` file that --repair removed. */
  removed?: boolean;
}

export interface FsckNames {
  /** Names that authenticate (entries the mount lists). */
  checked: number;
  /** Entries whose names do not authenticate (unauthenticated and long-name). */
  refused: number;
  orphans: number;
  /** The problems and orphans, by cipher path. */
  entries: FsckName[];
}

const join = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`);

/** Every regular file and symlink under the root, sorted by path; temp files marked. */
export function listFiles(dir: CipherDir, skip: ReadonlySet<string>): WalkedFile[] {
  const out: WalkedFile[] = [];
  const walk = (rel: string): void => {
    for (const d of dir.readdirTypes(rel)) {
      if (rel === '' && skip.has(d.name)) continue;
      const r = join(rel, d.name);
      if (d.isDirectory()) walk(r);
      else if (d.isFile() || d.isSymbolicLink()) {
        const st = dir.lstat(r);
        out.push({ rel: r, size: st.size, temp: d.name.startsWith(TEMP_PREFIX), symlink: st.isSymbolicLink() });
      }
    }
  };
  walk('');
  return out.sort((a, b) => compare(a.rel, b.rel));
}

/**
 * The walk of an encrypted-names volume: every directory is listed through the volume's names,
 * so each file gets its plaintext path and every entry the mount would leave out is reported.
 * A directory whose own name does not authenticate is walked too (names do not depend on their
 * directory, FORMAT.md §8): its files are checked and named by cipher path only. With `repair`,
 * orphan `.name` files go (confined, unlinked as themselves: never a symlink followed).
 */
export function listNamedFiles(dir: CipherDir, names: NameScheme, skip: ReadonlySet<string>, repair: boolean): { files: WalkedFile[]; names: FsckNames } {
  const files: WalkedFile[] = [];
  const found: FsckNames = { checked: 0, refused: 0, orphans: 0, entries: [] };
  const walk = (rel: string, plain: string | undefined): void => {
    const types = new Map<string, fs.Dirent>();
    for (const d of dir.readdirTypes(rel)) if (!(rel === '' && skip.has(d.name))) types.set(d.name, d);
    const visit = (entry: string, plainPath: string | undefined): void => {
      const d = types.get(entry);
      if (d === undefined) return; // made after our readdir: the next fsck sees it
      const r = join(rel, entry);
      if (d.isDirectory()) walk(r, plainPath);
      else if (d.isFile() || d.isSymbolicLink()) files.push(walked(dir, r, plainPath, entry.startsWith(TEMP_PREFIX), d.isSymbolicLink()));
    };
    const listing = names.list(dir, rel);
    for (const e of listing.entries) {
      found.checked++;
      visit(e.entry, plain === undefined ? undefined : join(plain, e.name));
    }
    for (const e of listing.refused) {
      const d = types.get(e.entry);
      if (d === undefined) continue;
      found.refused++;
      const long = isLongEntry(e.entry);
      const message = `${long ? 'long name: ' : 'cipher name '}${e.reason}: the mount does not list it`;
      found.entries.push({ path: join(rel, e.entry), dir: rel, plainDir: plain, type: typeOf(d), status: long ? 'long-name' : 'unauthenticated', message });
      visit(e.entry, undefined);
    }
    for (const [name, d] of types) {
      // The scheme leaves darefs's own entries out of listings: temp files are checked as in a
      // plain walk, `.name` files beside no entry are reported.
      if (name.startsWith(TEMP_PREFIX)) visit(name, undefined);
      else if (isLongNameFile(name) && !types.has(name.slice(0, -LONG_NAME_SUFFIX.length))) {
        found.orphans++;
        const orphan: FsckName = {
          path: join(rel, name),
          dir: rel,
          plainDir: plain,
          type: typeOf(d),
          status: 'orphan',
          message: `no entry beside it (a crash between writing this ${LONG_NAME_SUFFIX} file and linking its entry leaves one): harmless`,
        };
        if (repair) removeOrphan(dir, orphan);
        found.entries.push(orphan);
      }
    }
  };
  walk('', '');
  found.entries.sort((a, b) => compare(a.path, b.path));
  // By plaintext path (what the user knows); files with none after, by cipher path.
  files.sort((a, b) => (a.plain !== undefined && b.plain !== undefined ? compare(a.plain, b.plain) : a.plain !== undefined ? -1 : b.plain !== undefined ? 1 : compare(a.rel, b.rel)));
  return { files, names: found };
}

function walked(dir: CipherDir, rel: string, plain: string | undefined, temp: boolean, symlink: boolean): WalkedFile {
  let size = 0;
  try {
    size = dir.lstat(rel).size;
  } catch {
    // Gone or unreadable since the readdir: checking it reports why, by name.
  }
  return { rel, plain, size, temp, symlink };
}

/** Removes an orphan `.name` file, checked again first: its entry may have been made since. */
function removeOrphan(dir: CipherDir, orphan: FsckName): void {
  try {
    try {
      dir.lstat(orphan.path.slice(0, -LONG_NAME_SUFFIX.length));
      orphan.message += '; not removed: its entry exists now';
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (orphan.type === 'directory') {
      orphan.message += '; not removed: it is a directory (darefs never makes one of that name)';
      return;
    }
    // unlink through the parent: the entry itself goes, a symlink is never followed.
    dir.at(orphan.path, fs.unlinkSync);
    orphan.removed = true;
  } catch (err) {
    orphan.message += `; cannot remove it: ${(err as Error).message}`;
  }
}

function typeOf(d: fs.Dirent): FsckName['type'] {
  return d.isDirectory() ? 'directory' : d.isFile() ? 'file' : d.isSymbolicLink() ? 'symlink' : 'other';
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
