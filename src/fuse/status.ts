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
  return path.join(os.tmpdir(), `darefs-${process.getuid?.() ?? 0}`);
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
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
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
