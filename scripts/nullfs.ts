/*
 * A FUSE filesystem that does nothing, served by either darefs transport: the bound on what
 * darefs can reach on a machine, per transport. One 1 GiB file `f` that reads as zeros and
 * drops writes, plus a flat in-memory directory for the small-file rows (names only, empty
 * files that remember their size). No crypto, no cipher directory.
 *
 * Usage: node dist/scripts/nullfs.js [--transport kernel|fuse-native] [--writeback-cache] MOUNTPOINT
 * SIGTERM / SIGINT unmount. Prints the request counts per operation on exit.
 */
import { FuseMount } from '../src/fuse/native';
import { KernelMount } from '../src/fuse/kernel/mount';
import { Errno, FuseOperations, FuseStat } from '../src/fuse/native-types';

const BIG = 1 << 30;
const zeros = Buffer.alloc(1 << 20);
const now = BigInt(Date.now()) * 1_000_000n;

interface Entry {
  ino: number;
  mode: number;
  size: number;
}

function main(): void {
  const args = process.argv.slice(2);
  let transport = 'kernel';
  let writeback = false;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--transport') transport = args[++i];
    else if (args[i] === '--writeback-cache') writeback = true;
    else rest.push(args[i]);
  }
  const mnt = rest[0];
  if (!mnt || (transport !== 'kernel' && transport !== 'fuse-native')) {
    process.stderr.write('usage: nullfs [--transport kernel|fuse-native] [--writeback-cache] MOUNTPOINT\n');
    process.exit(2);
  }
  // Directories by path; every directory lists its children by name.
  const entries = new Map<string, Entry>([
    ['/', { ino: 1, mode: 0o40755, size: 4096 }],
    ['/f', { ino: 2, mode: 0o100644, size: BIG }],
  ]);
  const children = new Map<string, Set<string>>([['/', new Set(['f'])]]);
  let nextIno = 3;
  const counts: Record<string, number> = {};
  const count = (op: string): void => {
    counts[op] = (counts[op] ?? 0) + 1;
  };
  const stat = (e: Entry): FuseStat => ({ mode: e.mode, size: e.size, ino: e.ino, nlink: 1, uid: 0, gid: 0, blksize: 4096, blocks: Math.ceil(e.size / 512), atime: now, mtime: now, ctime: now });
  const parentOf = (p: string): string => p.slice(0, p.lastIndexOf('/')) || '/';
  const baseOf = (p: string): string => p.slice(p.lastIndexOf('/') + 1);
  const add = (p: string, mode: number): void => {
    entries.set(p, { ino: nextIno++, mode, size: 0 });
    children.get(parentOf(p))?.add(baseOf(p));
    if ((mode & 0o170000) === 0o040000) children.set(p, new Set());
  };
  const remove = (p: string): void => {
    entries.delete(p);
    children.get(parentOf(p))?.delete(baseOf(p));
    children.delete(p);
  };
  const ops: FuseOperations = {
    getattr: (p, cb) => {
      count('getattr');
      const e = entries.get(p);
      if (e) cb(0, stat(e));
      else cb(Errno.ENOENT);
    },
    fgetattr: (p, _fd, cb) => {
      count('fgetattr');
      const e = entries.get(p);
      if (e) cb(0, stat(e));
      else cb(Errno.ENOENT);
    },
    readdir: (p, cb) => {
      count('readdir');
      cb(0, ['.', '..', ...(children.get(p) ?? [])]);
    },
    opendir: (_p, _f, cb) => cb(0, 0),
    statfs: (_p, cb) => cb(0, { bsize: 4096, frsize: 4096, blocks: 1 << 20, bfree: 1 << 19, bavail: 1 << 19, files: 1 << 20, ffree: 1 << 19, namemax: 255 }),
    open: (_p, _flags, cb) => {
      count('open');
      cb(0, 1);
    },
    create: (p, mode, _caller, cb) => {
      count('create');
      add(p, mode);
      cb(0, 1);
    },
    mkdir: (p, mode, _caller, cb) => {
      count('mkdir');
      add(p, mode | 0o040000);
      cb(0);
    },
    unlink: (p, cb) => {
      count('unlink');
      remove(p);
      cb(0);
    },
    rmdir: (p, cb) => {
      count('rmdir');
      remove(p);
      cb(0);
    },
    release: (_p, _fd, cb) => cb(0),
    flush: (_p, _fd, cb) => cb(0),
    fsync: (_p, _d, _fd, cb) => cb(0),
    fsyncdir: (_p, _d, _fd, cb) => cb(0),
    truncate: (p, size, cb) => {
      const e = entries.get(p);
      if (e && p !== '/f') e.size = size;
      cb(0);
    },
    ftruncate: (p, _fd, size, cb) => {
      const e = entries.get(p);
      if (e && p !== '/f') e.size = size;
      cb(0);
    },
    utimens: (_p, _a, _m, cb) => cb(0),
    chmod: (_p, _m, cb) => cb(0),
    read: (p, _fd, buf, len, pos, cb) => {
      count('read');
      const size = entries.get(p)?.size ?? 0;
      const n = Math.max(0, Math.min(len, size - pos));
      zeros.copy(buf, 0, 0, Math.min(n, zeros.length));
      cb(n);
    },
    write: (p, _fd, _buf, len, pos, cb) => {
      count('write');
      const e = entries.get(p);
      if (e && p !== '/f' && pos + len > e.size) e.size = pos + len;
      cb(len);
    },
  };
  const start = async (): Promise<{ unmount(): Promise<void> }> =>
    transport === 'kernel'
      ? KernelMount.mount(mnt, ops, { fsname: 'nullfs', subtype: 'nullfs', writebackCache: writeback, onProblem: (m) => process.stderr.write(`nullfs: ${m}\n`) })
      : FuseMount.mount(mnt, ops, { fsname: 'nullfs', subtype: 'nullfs', maxWrite: 131072 });
  start().then(
    (mount) => {
      process.stdout.write(`mounted (${transport}${writeback ? ', writeback cache' : ''})\n`);
      const stop = (): void => {
        mount.unmount().then(
          () => {
            process.stdout.write(JSON.stringify(counts) + '\n');
            process.exit(0);
          },
          (err: unknown) => {
            process.stderr.write(`nullfs: unmount failed: ${String(err)}\n`);
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    },
    (err: unknown) => {
      process.stderr.write(`nullfs: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}

main();
