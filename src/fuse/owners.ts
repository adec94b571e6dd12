import type { FuseCaller } from './native-types';

const S_ISUID = 0o4000;
const S_ISGID = 0o2000;

export type EntryKind = 'file' | 'dir' | 'special' | 'symlink';

/** The daemon's own identity and umask, read once at mount. */
export interface DaemonIdentity {
  uid: number;
  gid: number;
  umask: number;
}

export function daemonIdentity(): DaemonIdentity {
  return { uid: process.geteuid?.() ?? -1, gid: process.getegid?.() ?? -1, umask: process.umask() };
}

/**
 * Makes a new entry look as if the caller had made it on a local file system:
 * - owner: the caller's uid, and gid unless the directory is setgid (then the kernel already gave
 *   it the directory's group, and a new directory is setgid too);
 * - mode: exactly what the kernel passed, which already had the CALLER's umask applied (the
 *   daemon's umask must not apply twice). chown clears setuid/setgid on a regular file, so the
 *   mode goes last.
 * A daemon that may not give files away (not root) keeps them as its own: without allow_other
 * the caller is the daemon's user anyway. Then setuid/setgid are dropped from another user's new
 * file, so nobody makes files setuid to the daemon's user.
 *
 * `target` changes the new entry: through its descriptor (a new file before it has its name) or
 * its confined path (never followed). Throws what chown and chmod throw, except chown's EPERM.
 */
export interface NewEntry {
  chown(uid: number, gid: number): void;
  chmod(mode: number): void;
  /** The mode of the directory it was made in. */
  parentMode(): number;
}

export function settleNewEntry(
  target: NewEntry,
  kind: EntryKind,
  caller: FuseCaller | undefined,
  mode: number | undefined,
  me: DaemonIdentity,
): void {
  const foreign = caller !== undefined && (caller.uid !== me.uid || caller.gid !== me.gid);
  let setgidDir: boolean | undefined;
  const inSetgidDir = (): boolean => (setgidDir ??= (target.parentMode() & S_ISGID) !== 0);
  let owned = true;
  if (foreign) {
    const gid = inSetgidDir() ? -1 : caller.gid;
    try {
      target.chown(caller.uid, gid);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      owned = caller.uid === me.uid;
    }
  }
  if (mode === undefined || kind === 'symlink') return;
  let want = mode & 0o7777;
  if (kind === 'dir' && inSetgidDir()) want |= S_ISGID;
  if (!owned && kind !== 'dir') want &= ~(S_ISUID | S_ISGID);
  if ((mode & me.umask) === 0 && (want & (S_ISUID | S_ISGID)) === 0 && want === (mode & 0o7777)) return;
  target.chmod(want);
}
