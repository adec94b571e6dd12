import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/** What `darefs status` shows for one mount. */
export interface MountStatus {
  mountpoint: string;
  cipherDir: string;
  pid: number;
  mode: 'ncrypt' | 'master';
  readOnly: boolean;
  startedAt: string;
  openFiles: number;
  keyCache: { hits: number; misses: number; derivations: number; size: number; hitRate: number | null };
  packageCache: { hits: number; misses: number; bytes: number; maxBytes: number; hitRate: number | null };
  packagesDecrypted: number;
  packagesSealed: number;
  streamsRewritten: number;
  authFailures: number;
  journal: string;
}

/** The directory of status sockets: private to the user (0700). */
export function statusDir(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime) return path.join(runtime, 'darefs');
  return path.join(os.tmpdir(), `darefs-${euid()}`);
}

function euid(): number {
  return process.geteuid?.() ?? 0;
}

/** The status socket directory is not ours alone: nothing is created in it or read from it. */
export class StatusDirError extends Error {
  readonly dir: string;

  constructor(dir: string, why: string) {
    super(`status socket directory ${dir} ${why}: not using it (remove it, or set XDG_RUNTIME_DIR to a private directory)`);
    this.name = new.target.name;
    this.dir = dir;
  }
}

/**
 * Checks, without following a symlink, that `dir` is a real directory owned by our effective uid
 * that no group or other user can enter. In a shared /tmp another user can create
 * /tmp/darefs-UID first (or plant a symlink there): a socket made in their directory can be
 * replaced or spoofed by them, and a chmod through their symlink would hit whatever it names.
 */
export function checkStatusDir(dir: string): void {
  const st = fs.lstatSync(dir);
  if (st.isSymbolicLink()) throw new StatusDirError(dir, 'is a symbolic link');
  if (!st.isDirectory()) throw new StatusDirError(dir, 'is not a directory');
  if (st.uid !== euid()) throw new StatusDirError(dir, `is owned by uid ${st.uid}, not by this user (uid ${euid()})`);
  if ((st.mode & 0o077) !== 0) {
    throw new StatusDirError(dir, `has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: group or others have access`);
  }
}

/** One socket per mount point, named by a hash of its canonical path. */
export function statusSocketPath(mountpoint: string): string {
  const id = crypto.createHash('sha256').update(mountpoint).digest('hex').slice(0, 20);
  return path.join(statusDir(), `${id}.sock`);
}

export function hitRate(hits: number, misses: number): number | null {
  return hits + misses === 0 ? null : hits / (hits + misses);
}

/**
 * Serves the daemon's status as one JSON line per connection, on a Unix socket only its owner can
 * open (directory 0700, socket 0600).
 */
export async function serveStatus(mountpoint: string, snapshot: () => MountStatus): Promise<{ close(): void }> {
  const dir = statusDir();
  fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o700 });
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
    // Exactly 0700 whatever the umask left; through an fd that cannot be a symlink's target.
    const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
    try {
      fs.fchmodSync(fd, 0o700);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  checkStatusDir(dir);
  const file = statusSocketPath(mountpoint);
  fs.rmSync(file, { force: true });
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end(JSON.stringify(snapshot()) + '\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => resolve());
  });
  fs.chmodSync(file, 0o600);
  server.unref();
  return {
    close: () => {
      server.close();
      fs.rmSync(file, { force: true });
    },
  };
}

/** Asks the daemon serving `mountpoint` for its status; undefined when nobody answers. */
export function queryStatus(mountpoint: string, timeoutMs = 3000): Promise<MountStatus | undefined> {
  try {
    // A socket in a directory someone else controls may be theirs: do not believe what it says.
    checkStatusDir(statusDir());
  } catch {
    return Promise.resolve(undefined);
  }
  return new Promise((resolve) => {
    const socket = net.connect(statusSocketPath(mountpoint));
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(text) as MountStatus);
      } catch {
        resolve(undefined);
      }
    });
  });
}
