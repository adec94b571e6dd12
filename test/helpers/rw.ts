/**
 * Helpers for the read-write mount tests (test/mount-rw-*.test.ts): master-mode volumes, child
 * programs with deadlines, direct decryption of cipher files after unmount, tree listings.
 *
 * Rule of these tests: the test process never makes a synchronous fs call on a mount point (a
 * hung daemon would hang the ava worker); fs.promises and child processes only. Synchronous calls
 * on the cipher directory or a plain model directory are fine.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { MAX_PACKAGE, PREFIX_SIZE, decryptStream, plaintextSizeOrUndefined } from '../../src/dare';
import { CONFIG_DIR, journalKey, masterFileKey, readConfig, unlockMasterKey } from '../../src/keys';
import { RefNameKeys, refEncryptName, refEntryName, refPlainTree, refVolumeNameKeys } from './names';
import { CipherDir, Journal } from '../../src/store';
import { CLI, passfile, writePassfile } from './darefs';
import { DaemonSpec, MountContext, MountDirs, MountHarnessOptions, withMount } from './mount';

export const PASSPHRASE = 'rw tests passphrase';

/** Debian package of each program the rw tests run (also listed in scripts/test-deps.txt). */
const PACKAGE_OF: Record<string, string> = {
  git: 'git',
  sqlite3: 'sqlite3',
  tar: 'tar',
  chattr: 'e2fsprogs',
  lsattr: 'e2fsprogs',
  setpriv: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  mkfifo: 'coreutils',
  df: 'coreutils',
  touch: 'coreutils',
  ln: 'coreutils',
  chown: 'coreutils',
  readlink: 'coreutils',
  cp: 'coreutils',
  cat: 'coreutils',
  sh: 'dash',
  setfattr: 'attr',
  getfattr: 'attr',
  python3: 'python3',
};

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program with a deadline (SIGKILL after `timeoutMs`). A missing program is an error with
 * a clear message, never a skip.
 */
export function run(file: string, args: string[], opts: { cwd?: string; timeoutMs?: number; input?: string | Buffer; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, killSignal: 'SIGKILL', maxBuffer: 64 << 20, env: { ...process.env, LC_ALL: 'C', ...opts.env } },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: NodeJS.Signals }) | null;
        if (e && e.code === 'ENOENT' && typeof e.syscall === 'string' && e.syscall.startsWith('spawn')) {
          reject(missingProgram(file));
          return;
        }
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          stdout: String(stdout),
          stderr: String(stderr),
        });
      },
    );
    child.stdin?.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

function missingProgram(file: string): Error {
  const name = path.basename(file);
  const pkg = PACKAGE_OF[name];
  return new Error(
    `program '${name}' is missing on this machine${pkg ? ` (Debian package ${pkg})` : ''}: ` +
      'the rw mount tests need it; it is listed in scripts/test-deps.txt for the install step',
  );
}

/** Like run(), but throws with the output unless the exit code is 0. */
export async function runOk(file: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  const res = await run(file, args, opts);
  if (res.code !== 0) {
    throw new Error(`${file} ${args.join(' ')} failed (${res.signal ? `signal ${res.signal}` : `exit ${String(res.code)}`}):\n${res.stdout}\n${res.stderr}`);
  }
  return res;
}

/** Fails clearly (no skip) when a program the test needs is not installed. */
export async function requirePrograms(...names: string[]): Promise<void> {
  for (const name of names) {
    const res = await run('sh', ['-c', 'command -v "$1"', 'sh', name], { timeoutMs: 10_000 });
    if (res.code !== 0) throw missingProgram(name);
  }
}

/** Runs a python snippet (paths as sys.argv[1:]) and gives what it prints, trimmed; an OSError prints its errno name. */
export async function py(code: string, ...args: string[]): Promise<string> {
  const wrapped = `import errno, os, sys\ntry:\n${code.split('\n').map((l) => `  ${l}`).join('\n')}\nexcept OSError as e:\n  print(errno.errorcode.get(e.errno, e.errno))\n`;
  return (await runOk('python3', ['-c', wrapped, ...args], { timeoutMs: 20_000 })).stdout.trim();
}

/**
 * Python to put before a script: `rec(label, fn)` calls fn and appends to `out` [label, 'ok',
 * result (bytes as hex)] or, on OSError, [label, errno name].
 */
export const PY_RECORDER = String.raw`
import errno
out = []
def rec(label, fn):
    try:
        r = fn()
        if isinstance(r, bytes): r = r.hex()
        out.append([label, 'ok', r])
    except OSError as e:
        out.append([label, errno.errorcode.get(e.errno, e.errno)])
`;

/** 'ok', or the error's code (EIO, EROFS, ...). */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

// ---------------------------------------------------------------------------------------------
// volumes and mounts

/** `darefs init` of a master-mode volume (passphrase from the test's passfile). */
export async function initMasterVolume(dirs: MountDirs, cipherDir = dirs.cipherDir, extra: string[] = []): Promise<void> {
  await writePassfile(dirs, PASSPHRASE);
  await runOk(process.execPath, [CLI, 'init', '-q', '--passfile', passfile(dirs), ...TEST_NAMES_OPTIONS, ...extra, cipherDir], { timeoutMs: 30_000 });
}

/**
 * DAREFS_TEST_NAMES=encrypted (`npm run test:encrypted-names`) runs the tests that use these
 * helpers on volumes with encrypted names: the helpers below then find cipher entries by the
 * tests' own §8 code (test/helpers/names.ts).
 */
const TEST_NAMES_OPTIONS = process.env.DAREFS_TEST_NAMES === 'encrypted' ? ['--encrypt-names'] : [];

const nameKeysOf = new Map<string, Promise<RefNameKeys | undefined>>();

/** The name keys of an encrypted-names volume (tests' passphrase), undefined for plain names. */
function volumeNameKeys(cipherDir: string, passphrase = PASSPHRASE): Promise<RefNameKeys | undefined> {
  let p = nameKeysOf.get(cipherDir);
  if (!p) {
    p = (async () => {
      const config = await readConfig(cipherDir);
      if (TEST_NAMES_OPTIONS.length > 0 && config !== null && config.names !== 'encrypted') throw new Error(`${cipherDir}: DAREFS_TEST_NAMES=encrypted but the volume has plain names`);
      if (config?.names !== 'encrypted') return undefined;
      return refVolumeNameKeys(cipherDir, passphrase);
    })();
    nameKeysOf.set(cipherDir, p);
  }
  return p;
}

/** The absolute cipher path of plaintext path `rel` ('a/b'), on either kind of volume. */
export async function cipherPathOf(cipherDir: string, rel: string): Promise<string> {
  const keys = await volumeNameKeys(cipherDir);
  if (!keys) return path.join(cipherDir, rel);
  return path.join(cipherDir, ...rel.split('/').map((n) => refEntryName(refEncryptName(keys, Buffer.from(n)))));
}

/**
 * The cipher directory's tree keyed by plaintext path (listTree without .darefs; on an
 * encrypted-names volume names opened with the tests' §8 code), and the cipher path of each.
 */
export async function cipherTree(cipherDir: string): Promise<{ tree: Tree; cipherPath: (rel: string) => string }> {
  const cipher = await listTree(cipherDir, (name, dir) => dir === '' && name === CONFIG_DIR);
  const keys = await volumeNameKeys(cipherDir);
  if (!keys) return { tree: cipher, cipherPath: (rel) => path.join(cipherDir, rel) };
  const byPlain = refPlainTree(cipherDir, keys);
  const tree: Tree = new Map([...byPlain].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([plain, c]) => [plain, cipher.get(c)!]));
  return { tree, cipherPath: (rel) => path.join(cipherDir, byPlain.get(rel) ?? rel) };
}

/**
 * A `darefs mount -f` spec of a master volume. `extra()` is read at every (re)spawn, so a test
 * can remount with other options; `cipherDir` overrides the harness's cipher directory, `wrap`
 * puts a program (such as setpriv) in front of node.
 */
export function masterMount(opts: { extra?: () => string[]; cipherDir?: (dirs: MountDirs) => string; wrap?: string[] } = {}): (dirs: MountDirs) => DaemonSpec {
  return (dirs) => {
    const args = [CLI, 'mount', '-f', '--passfile', passfile(dirs), ...(opts.extra?.() ?? []), opts.cipherDir?.(dirs) ?? dirs.cipherDir, dirs.mountpoint];
    if (opts.wrap?.length) return { command: opts.wrap[0], args: [...opts.wrap.slice(1), process.execPath, ...args] };
    return { command: process.execPath, args };
  };
}

/** withMount over a fresh master-mode volume in the harness's cipher directory; `init`: more `darefs init` options (e.g. --encrypt-names). */
export function withMasterMount<T>(
  t: ExecutionContext,
  fn: (m: MountContext) => Promise<T>,
  opts: MountHarnessOptions & { extra?: () => string[]; wrap?: string[]; init?: string[] } = {},
): Promise<T> {
  return withMount(t, masterMount({ extra: opts.extra, wrap: opts.wrap }), fn, {
    ...opts,
    setup: async (dirs) => {
      await initMasterVolume(dirs, dirs.cipherDir, opts.init);
      if (opts.setup) await opts.setup(dirs);
    },
  });
}

/** Stops the daemon (SIGTERM) and checks it exited cleanly and took its mount with it. */
export async function stopCleanly(t: ExecutionContext, m: MountContext): Promise<void> {
  const exit = await m.stop();
  t.deepEqual(exit, { code: 0, signal: null }, `daemon exit\n${m.output()}`);
  const mounts = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  t.false(mounts.split('\n').some((l) => l.split(' ')[4] === m.mountpoint), 'mount gone after SIGTERM');
}

// ---------------------------------------------------------------------------------------------
// reading cipher files directly

export type KeyFor = (prefix: Buffer) => Buffer;

/** Key derivation of a master volume, from its config and the tests' passphrase. */
export async function volumeKeys(cipherDir: string, passphrase = PASSPHRASE): Promise<KeyFor> {
  const config = await readConfig(cipherDir);
  if (!config) throw new Error(`${cipherDir} has no volume config`);
  const master = await unlockMasterKey(config, cipherDir, { passphrase: Buffer.from(passphrase) });
  return (prefix) => masterFileKey(master, prefix, config.kdf);
}

/**
 * Decrypts a cipher file with src/dare's streaming decryptor and also checks the FORMAT.md
 * layout (the size arithmetic holds: full middle packages). Throws on anything invalid.
 */
export async function decryptCipherFile(keyFor: KeyFor, file: string): Promise<Buffer> {
  const data = await fsp.readFile(file);
  const expected = plaintextSizeOrUndefined(data.length);
  if (expected === undefined) throw new Error(`${file}: cipher size ${data.length} is not a valid stream length`);
  if (data.length < PREFIX_SIZE) throw new Error(`${file}: shorter than a prefix`);
  const key = keyFor(data.subarray(0, PREFIX_SIZE));
  const parts: Buffer[] = [];
  for await (const chunk of decryptStream([data.subarray(PREFIX_SIZE)], key)) parts.push(Buffer.from(chunk));
  const plain = Buffer.concat(parts);
  if (plain.length !== expected) throw new Error(`${file}: decrypted ${plain.length} bytes, the size arithmetic says ${expected}`);
  for (let at = PREFIX_SIZE, i = 0; at < data.length; at += MAX_PACKAGE, i++) {
    if (data[at] !== 0x10 || data.readUInt32LE(at + 4) !== i) throw new Error(`${file}: package ${i} is not a DARE 1.0 package with sequence number ${i}`);
  }
  return plain;
}

/** `darefs decrypt` of one cipher file, as a user would run it. */
export async function cliDecrypt(dirs: MountDirs, cipherFile: string, out: string, cipherDir = dirs.cipherDir): Promise<RunResult> {
  return run(process.execPath, [CLI, 'decrypt', '--volume', cipherDir, '--passfile', passfile(dirs), cipherFile, out], { timeoutMs: 30_000 });
}

// ---------------------------------------------------------------------------------------------
// trees

export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'other';
  size?: number;
  target?: string;
  mode?: number;
}

export type Tree = Map<string, TreeEntry>;

function typeOf(st: fs.Stats): TreeEntry['type'] {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  return 'other';
}

/**
 * Every entry under `root` (relative paths, '/'-separated), with type, size of files, link
 * targets, and mode bits; names for which `skip(name, relDir)` is true are left out.
 */
export async function listTree(root: string, skip: (name: string, relDir: string) => boolean = () => false): Promise<Tree> {
  const out: Tree = new Map();
  async function walk(rel: string): Promise<void> {
    const names = (await fsp.readdir(path.join(root, rel))).sort();
    for (const name of names) {
      if (skip(name, rel)) continue;
      const r = rel ? `${rel}/${name}` : name;
      const st = await fsp.lstat(path.join(root, r));
      const e: TreeEntry = { type: typeOf(st), mode: st.mode & 0o7777 };
      if (e.type === 'file') e.size = st.size;
      if (e.type === 'symlink') e.target = await fsp.readlink(path.join(root, r));
      out.set(r, e);
      if (e.type === 'dir') await walk(r);
    }
  }
  await walk('');
  return out;
}

/** libfuse 2 renames an open file that is unlinked to `.fuse_hiddenXXXX` until its last close. */
export const isFuseHidden = (name: string): boolean => name.startsWith('.fuse_hidden');

/** What the plaintext view must never show at its root, and the store's own temporary files. */
export const isCipherOnly = (name: string, relDir: string): boolean => (relDir === '' && name === CONFIG_DIR);

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** `size` deterministic pseudo-random bytes from a seeded generator (mulberry32 words). */
export function randomBytesFrom(rand: () => number, size: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let i = 0;
  for (; i + 4 <= size; i += 4) buf.writeUInt32LE(Math.floor(rand() * 0x100000000), i);
  for (; i < size; i++) buf[i] = Math.floor(rand() * 256);
  return buf;
}

/** Mounts a tmpfs of `size` (e.g. '4m') at `dir`; the returned function unmounts it (idempotent). */
export async function mountTmpfs(dir: string, size: string): Promise<() => Promise<void>> {
  await fsp.mkdir(dir, { recursive: true });
  await runOk('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { timeoutMs: 10_000 });
  let done = false;
  return async () => {
    if (done) return;
    const res = await run('umount', [dir], { timeoutMs: 10_000 });
    if (res.code !== 0) {
      const lazy = await run('umount', ['-l', dir], { timeoutMs: 10_000 });
      if (lazy.code !== 0 && (await isMountPoint(dir))) throw new Error(`cannot unmount tmpfs ${dir}: ${res.stderr} ${lazy.stderr}`);
    }
    done = true;
  };
}

export async function isMountPoint(dir: string): Promise<boolean> {
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === dir);
}

/** pread until `length` bytes or end of file (one read(2) may return less through FUSE). */
export async function readFully(fh: import('node:fs/promises').FileHandle, length: number, position = 0): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

/**
 * Reads a file to its end with read(2) calls until one returns 0, as cat does. fs.readFile stops
 * at the first short read, and the kernel answers a read that hits a failing page with the bytes
 * before it: readFile would then "succeed" with a truncated file.
 */
export async function readToEnd(file: string): Promise<Buffer> {
  const fh = await fsp.open(file, 'r');
  try {
    const parts: Buffer[] = [];
    for (let pos = 0; ; ) {
      const buf = Buffer.alloc(1 << 20);
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return Buffer.concat(parts);
      parts.push(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/**
 * Hashes of every regular file's content under a mount (read through the mount), so that after
 * the unmount the cipher files can be checked against them with checkCipherFiles.
 */
export async function contentHashes(root: string, skip: (name: string, relDir: string) => boolean = () => false): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [rel, e] of await listTree(root, skip)) {
    if (e.type === 'file') out.set(rel, sha256(await readToEnd(path.join(root, rel))));
  }
  return out;
}

/**
 * After an unmount: every regular cipher file decrypts (valid stream by FORMAT.md) and equals
 * `expected` (plaintext hashes by relative path), which must name exactly the cipher files.
 */
export async function checkCipherFiles(t: ExecutionContext, cipherDir: string, expected: Map<string, string>): Promise<void> {
  const keyFor = await volumeKeys(cipherDir);
  const { tree, cipherPath } = await cipherTree(cipherDir);
  const files = [...tree].filter(([, e]) => e.type === 'file').map(([rel]) => rel).sort();
  t.deepEqual(files, [...expected.keys()].sort(), 'cipher files are exactly the plaintext files');
  for (const rel of files) {
    let digest: string;
    try {
      digest = sha256(await decryptCipherFile(keyFor, cipherPath(rel)));
    } catch (err) {
      t.fail(`cipher file ${rel}: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    if (digest !== expected.get(rel)) t.fail(`cipher file ${rel} decrypts to other content than the mount showed`);
  }
}

/**
 * The journal of a master volume as darefs keeps it (its MAC key derived from the master key), to
 * make a genuine journal (what a crash after a commit leaves) or read one; close() when done.
 */
export async function volumeJournal(cipherDir: string, passphrase = PASSPHRASE): Promise<{ journal: Journal; close(): void }> {
  const config = await readConfig(cipherDir);
  if (!config) throw new Error(`${cipherDir} has no volume config`);
  const master = await unlockMasterKey(config, cipherDir, { passphrase: Buffer.from(passphrase) });
  const dir = CipherDir.open(cipherDir);
  const key = journalKey(master);
  const journal = new Journal(dir, { key, keys: { key: async (prefix) => masterFileKey(master, prefix, config.kdf) } });
  return {
    journal,
    close: () => {
      journal.close();
      dir.close();
      key.fill(0);
      master.fill(0);
    },
  };
}

/**
 * Writes a file through a mount and fsyncs it before the close: its cipher file is then in place
 * (a close alone leaves the packages in the journal until the next checkpoint, issue 12).
 */
export async function writeFileSynced(file: string, data: string | Buffer, mode?: number): Promise<void> {
  const fh = await fsp.open(file, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
