import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The reference vectors live in shared/ beside the repository; never copied into it. */
export const VECTORS_DIR = process.env.DAREFS_VECTORS ?? path.resolve(__dirname, '..', '..', '..', '..', 'shared', 'vectors');

export interface VectorEntry {
  file: string;
  plaintext: string | null;
  mode: 'ncrypt' | 'master';
  password?: string;
  masterKeyHex?: string;
  kdf?: 'hmac-sha256';
  version: '1.0' | '2.0' | null;
  cipher: string | null;
  expect: 'ok' | 'error';
  sioError: string | null;
  errorSource?: 'prefix';
  sioPartialBytes?: number;
  derivedFrom?: string;
  note?: string;
}

export function loadManifest(): VectorEntry[] {
  return JSON.parse(fs.readFileSync(path.join(VECTORS_DIR, 'manifest.json'), 'utf8')) as VectorEntry[];
}

export function vectorPath(name: string): string {
  return path.join(VECTORS_DIR, name);
}

/** A readable title for one manifest entry (files can appear twice: wrong key on purpose). */
export function entryTitle(e: VectorEntry): string {
  const secret = e.mode === 'ncrypt' ? e.password : e.masterKeyHex;
  const wrong = secret !== undefined && secret !== 'correct horse battery staple' && !secret.startsWith('000102') ? ' (wrong key)' : '';
  return `${e.file}${wrong}`;
}

// ---- Small deterministic utilities shared by the dare tests ----

/** A seeded pseudo-random source (mulberry32), for reproducible sizes and offsets; not for keys. */
export interface Random {
  /** A float in [0, 1) with 53 random bits. */
  next(): number;
  /** An integer in [lo, hi], both inclusive (exact up to 2^53). */
  int(lo: number, hi: number): number;
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T;
}

/** mulberry32: 32-bit outputs from a seed; shared by every seeded test helper. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function seedNumber(seed: number | string): number {
  if (typeof seed === 'number') return seed >>> 0;
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export function seededRandom(seed: number | string): Random {
  const next32 = mulberry32(seedNumber(seed));
  const next = (): number => (next32() * 2 ** 21 + (next32() >>> 11)) / 2 ** 53;
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (items) => items[Math.floor(next() * items.length)],
  };
}

/**
 * Splits `data` into views of random sizes: a mix of tiny (1..48 bytes, so headers and tags
 * straddle chunks), medium (up to a little over one package) and large (several packages).
 */
export function* randomChunks(data: Buffer, random: Random): Generator<Buffer> {
  let offset = 0;
  while (offset < data.length) {
    const kind = random.next();
    const max = kind < 0.3 ? 48 : kind < 0.8 ? 70_000 : 300_000;
    const size = Math.min(data.length - offset, random.int(1, max));
    yield data.subarray(offset, offset + size);
    offset += size;
  }
}

/** `size` reproducible pseudo-random bytes (AES-256-CTR keystream of a key hashed from `seed`). */
export function pseudoRandomBytes(size: number, seed: string): Buffer {
  const key = crypto.createHash('sha256').update(seed).digest();
  const c = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(size)), c.final()]);
}

/** Collects everything an async iterable yields, and the error it ended with, if any. */
export async function drain(source: AsyncIterable<Buffer>): Promise<{ output: Buffer; error: unknown }> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of source) chunks.push(chunk);
    return { output: Buffer.concat(chunks), error: undefined };
  } catch (error) {
    return { output: Buffer.concat(chunks), error };
  }
}
