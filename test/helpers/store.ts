/**
 * Helpers for the src/store tests: a seeded PRNG, temp dirs, master-mode keys, volumes, cipher
 * files made by the streaming codec, and a strict checker of cipher files on disk.
 */
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  Cipher,
  HEADER_SIZE,
  MAX_PACKAGE,
  PACKAGE_OVERHEAD,
  PREFIX_SIZE,
  Version,
  aeadNonce,
  cipherSize,
  decryptStream,
  encryptStream,
  headerIsFinal,
  headerPayloadLength,
  headerSequence,
  packageCount,
  packageOffset,
  payloadLength,
} from '../../src/dare';
import { masterFileKey } from '../../src/keys';
import { KeySource, StoreSettings, Volume, VolumeOptions } from '../../src/store';

// ---- seeded randomness ----

/** mulberry32: small, fast, good enough to drive random tests reproducibly. */
export class Rng {
  private state: number;
  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** `n` fresh bytes: exact PRNG output when small, else a random slice of a seeded pool. */
  bytes(n: number): Buffer {
    if (n > 64 && n <= Rng.POOL / 2) {
      this.pool ??= this.exact(Rng.POOL);
      const at = this.int(Rng.POOL - n + 1);
      const copy = Buffer.from(this.pool.subarray(at, at + n));
      // Stamp the slice so that two slices of the pool never look alike.
      this.exact(16).copy(copy, this.int(n - 15));
      return copy;
    }
    return this.exact(n);
  }
  private static readonly POOL = 1 << 20;
  private pool: Buffer | undefined;
  private exact(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) out.writeUInt32LE((this.next() * 4294967296) >>> 0, i);
    for (; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/**
 * The seed of a random test: STORE_SEED overrides it (to reproduce a failure), otherwise it is
 * fixed per test (`base`) so runs are reproducible by default. Logged by the caller.
 */
export function seedFor(base: number): number {
  const env = process.env.STORE_SEED;
  return env !== undefined && env !== '' ? Number(env) >>> 0 : base >>> 0;
}

// ---- temp dirs and tmpfs ----

/** A fresh temp dir, removed when the test ends. */
export function tempDir(t: ExecutionContext, label = 'store'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `darefs-${label}-`));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A tmpfs of `size` mounted on a fresh temp dir, unmounted (and removed) when the test ends;
 * undefined when mounting is not possible here (not root, no mount).
 */
export function tmpfsDir(t: ExecutionContext, size: string): string | undefined {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'darefs-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    t.log(`cannot mount tmpfs: ${(err as Error).message.split('\n')[0]}`);
    return undefined;
  }
  t.teardown(() => {
    try {
      execFileSync('umount', [dir], { stdio: 'pipe' });
    } catch {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

// ---- keys and volumes ----

export interface MasterKeys {
  masterKey: Buffer;
  keys: KeySource;
  keyOf(prefix: Buffer): Buffer;
  /** Number of key() calls made through `keys`. */
  calls: number;
}

/** Master mode: a random master key, HMAC-SHA256 per prefix (FORMAT.md §4). */
export function masterKeys(masterKey: Buffer = randomBytes(32)): MasterKeys {
  const mk: MasterKeys = {
    masterKey,
    calls: 0,
    keyOf: (prefix) => masterFileKey(masterKey, prefix),
    keys: {
      key: async (prefix: Buffer) => {
        mk.calls++;
        return masterFileKey(masterKey, prefix);
      },
    },
  };
  return mk;
}

export const SETTINGS_V10: StoreSettings = { newFileVersion: Version.V10, newFileCipher: Cipher.AES_256_GCM, convert2to1: true };
export const SETTINGS_KEEP_V20: StoreSettings = { newFileVersion: Version.V20, newFileCipher: Cipher.AES_256_GCM, convert2to1: false };

export function makeVolume(keys: KeySource, opts: Partial<Omit<VolumeOptions, 'keys'>> = {}): Volume {
  return new Volume({
    keys,
    settings: opts.settings ?? SETTINGS_V10,
    readOnly: opts.readOnly ?? false,
    packageCacheBytes: opts.packageCacheBytes ?? 16 << 20,
    dirtyBytes: opts.dirtyBytes ?? 64 << 20,
  });
}

/** Writes `plain` as a cipher file made by the streaming encoder (what sio/ncrypt would write). */
export async function writeStreamFile(
  file: string,
  plain: Buffer,
  mk: MasterKeys,
  version: Version,
  cipher: Cipher = Cipher.AES_256_GCM,
): Promise<Buffer> {
  const prefix = randomBytes(PREFIX_SIZE);
  const parts: Buffer[] = [prefix];
  const chunks: Buffer[] = [];
  for (let i = 0; i < plain.length; i += 10000) chunks.push(plain.subarray(i, i + 10000));
  for await (const pkg of encryptStream(chunks, mk.keyOf(prefix), { version, cipher })) parts.push(pkg);
  fs.writeFileSync(file, Buffer.concat(parts));
  return prefix;
}

// ---- checking cipher files ----

export interface PackageRecord {
  index: number;
  offset: number;
  version: number;
  /** AEAD nonce (12 bytes) as hex. */
  nonce: string;
  /** sha256 of header || ciphertext || tag, hex. */
  sealed: string;
}

export interface CipherFileInfo {
  prefix: Buffer;
  version: number | undefined;
  packages: PackageRecord[];
  plain: Buffer;
}

/**
 * Reads a cipher file and checks it is a regular stream (FORMAT.md §2, §3) holding exactly
 * `expected` (when given): size = cipherSize(n), every package at its offset with the payload
 * length the arithmetic says, one version, 1.0 sequence numbers, 2.0 final flag only on the last,
 * and decryptStream (the streaming reference path) returns exactly the plaintext.
 * Throws an Error describing the first difference.
 */
export async function inspectCipherFile(file: string, mk: MasterKeys, expected?: Buffer, hashes = true): Promise<CipherFileInfo> {
  const raw = fs.readFileSync(file);
  if (raw.length < PREFIX_SIZE) throw new Error(`${file}: ${raw.length} bytes, shorter than the prefix`);
  const prefix = Buffer.from(raw.subarray(0, PREFIX_SIZE));
  const key = mk.keyOf(prefix);
  const chunks: Buffer[] = [];
  for await (const p of decryptStream([raw.subarray(PREFIX_SIZE)], key)) chunks.push(p);
  const plain = Buffer.concat(chunks);
  if (raw.length !== cipherSize(plain.length)) {
    throw new Error(`${file}: cipher size ${raw.length}, want cipherSize(${plain.length}) = ${cipherSize(plain.length)}`);
  }
  const count = packageCount(plain.length);
  const packages: PackageRecord[] = [];
  let version: number | undefined;
  for (let index = 0; index < count; index++) {
    const offset = packageOffset(index);
    const length = payloadLength(index, plain.length);
    const pkg = raw.subarray(offset, offset + length + PACKAGE_OVERHEAD);
    const header = pkg.subarray(0, HEADER_SIZE);
    if (headerPayloadLength(header) !== length) throw new Error(`${file}: package ${index} holds ${headerPayloadLength(header)} bytes, want ${length}`);
    version ??= header[0];
    if (header[0] !== version) throw new Error(`${file}: package ${index} has version ${header[0]}, package 0 ${version}`);
    if (version === Version.V10 && headerSequence(header) !== index) throw new Error(`${file}: package ${index} has sequence ${headerSequence(header)}`);
    if (version === Version.V20 && headerIsFinal(header) !== (index === count - 1)) throw new Error(`${file}: package ${index} final flag wrong`);
    packages.push({
      index,
      offset,
      version: header[0],
      nonce: aeadNonce(header, index).toString('hex'),
      sealed: hashes ? createHash('sha256').update(pkg).digest('hex') : '',
    });
  }
  if (expected !== undefined && !plain.equals(expected)) {
    throw new Error(`${file}: decrypts to ${plain.length} bytes that differ from the ${expected.length} expected at byte ${firstDifference(plain, expected)}`);
  }
  return { prefix, version, packages, plain };
}

export function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Byte positions where two buffers differ (a length difference counts every extra byte). */
export function differingBytes(a: Buffer, b: Buffer): { count: number; first: number; last: number } {
  let count = Math.abs(a.length - b.length);
  let first = -1;
  let last = -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) {
      count++;
      if (first < 0) first = i;
      last = i;
    }
  }
  if (a.length !== b.length) {
    if (first < 0) first = n;
    last = Math.max(a.length, b.length) - 1;
  }
  return { count, first, last };
}

/** Cipher bytes of one full package on disk. */
export const PACKAGE_BYTES = MAX_PACKAGE;

/** Files in `dir` that look like leftovers of a stream rewrite. */
export function tempLeftovers(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('.darefs-tmp.'));
}

/** A plain-Buffer model of a file's plaintext. */
export class Model {
  data = Buffer.alloc(0);
  write(offset: number, bytes: Buffer): void {
    const end = offset + bytes.length;
    if (end > this.data.length) this.resize(end);
    bytes.copy(this.data, offset);
  }
  truncate(size: number): void {
    this.resize(size);
  }
  read(offset: number, length: number): Buffer {
    if (offset >= this.data.length) return Buffer.alloc(0);
    return this.data.subarray(offset, Math.min(this.data.length, offset + length));
  }
  private resize(size: number): void {
    if (size <= this.data.length) {
      this.data = Buffer.from(this.data.subarray(0, size));
      return;
    }
    const grown = Buffer.alloc(size);
    this.data.copy(grown);
    this.data = grown;
  }
}

/**
 * The path a `/proc/self/fd/N/name` path (how the store names an entry of its confined cipher
 * directory: src/store/cipher-dir.ts) stands for, while descriptor N is open; other paths as they are.
 */
export function realPathOf(p: string): string {
  const m = /^\/proc\/self\/fd\/(\d+)(?:\/(.*))?$/.exec(p);
  if (!m) return p;
  const dir = fs.readlinkSync(`/proc/self/fd/${m[1]}`);
  return m[2] === undefined ? dir : path.join(dir, m[2]);
}

/**
 * Streams a cipher file through the reference decryptor (src/dare decryptStream) and checks its
 * plaintext is `size` bytes: zeros, except `tail` at its end and `head` at its start.
 */
export async function expectZerosBetween(t: ExecutionContext, file: string, keyOf: (prefix: Buffer) => Buffer, size: number, head: Buffer, tail: Buffer): Promise<void> {
  t.is(fs.statSync(file).size, cipherSize(size), 'cipher size of the plaintext');
  const prefix = Buffer.alloc(PREFIX_SIZE);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, prefix, 0, PREFIX_SIZE, 0);
  fs.closeSync(fd);
  let at = 0;
  let bad = -1;
  for await (const chunk of decryptStream(fs.createReadStream(file, { start: PREFIX_SIZE, highWaterMark: 1 << 20 }), keyOf(prefix))) {
    for (let i = 0; i < chunk.length && bad < 0; i++) {
      const pos = at + i;
      const want = pos < head.length ? head[pos] : pos >= size - tail.length ? tail[pos - (size - tail.length)] : 0;
      if (chunk[i] !== want) bad = pos;
    }
    at += chunk.length;
  }
  t.is(at, size, 'decrypted length');
  t.is(bad, -1, 'zeros between the old content and the new byte');
}
