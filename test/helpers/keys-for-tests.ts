/**
 * Stream keys for the dare tests, derived here with bare node:crypto so that the format tests do
 * not depend on src/keys (FORMAT.md §4, vectors/README.md):
 * - ncrypt mode: scrypt(password, salt = 32-byte prefix, N=32768, r=16, p=1, 32 bytes);
 * - master mode: HMAC-SHA256(key = master key, message = prefix).
 */
import { createHmac, scrypt } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { VectorEntry, vectorPath } from './vectors';

export const PREFIX_SIZE = 32;
/** Password and master key of the vectors (the wrong-key entries carry their own). */
export const VECTOR_PASSWORD = 'correct horse battery staple';
export const VECTOR_MASTER_KEY_HEX = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';

/** ncrypt's scrypt needs 128·N·r = 64 MiB, above node's default maxmem of 32 MiB. */
const NCRYPT_SCRYPT = { N: 32768, r: 16, p: 1, maxmem: 256 * 1024 * 1024 };

/** Runs at most `limit` tasks at a time. */
class Limiter {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    // A finishing task hands its slot straight to the next waiter, so `running` never overshoots.
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

/** At most two scrypt runs at a time in one test file: each takes ~0.2 s and 64 MiB. */
const scryptSlots = new Limiter(2);

export function ncryptKey(password: string, prefix: Buffer): Promise<Buffer> {
  return scryptSlots.run(
    () =>
      new Promise<Buffer>((resolve, reject) => {
        scrypt(Buffer.from(password, 'utf8'), prefix, 32, NCRYPT_SCRYPT, (err, key) => (err ? reject(err) : resolve(key)));
      }),
  );
}

export function masterKey(masterKeyHex: string, prefix: Buffer): Buffer {
  return createHmac('sha256', Buffer.from(masterKeyHex, 'hex')).update(prefix).digest();
}

async function readPrefix(file: string): Promise<Buffer> {
  const handle = await fs.open(vectorPath(file), 'r');
  try {
    const prefix = Buffer.alloc(PREFIX_SIZE);
    const { bytesRead } = await handle.read(prefix, 0, PREFIX_SIZE, 0);
    if (bytesRead !== PREFIX_SIZE) throw new Error(`${file}: shorter than the ${PREFIX_SIZE}-byte prefix`);
    return prefix;
  } finally {
    await handle.close();
  }
}

function secretOf(e: VectorEntry): string {
  const secret = e.mode === 'ncrypt' ? e.password : e.masterKeyHex;
  if (secret === undefined) throw new Error(`${e.file}: manifest entry without a ${e.mode} secret`);
  return secret;
}

/**
 * The keys of manifest entries, each (file, mode, secret) derived once (scrypt two at a time,
 * see ncryptKey). Call `deriveAll` in a `test.before`, then `get` synchronously in the tests.
 */
export class VectorKeys {
  private readonly pending = new Map<string, Promise<Buffer>>();
  private readonly ready = new Map<string, Buffer>();
  private static id(e: VectorEntry): string {
    return `${e.file}\0${e.mode}\0${secretOf(e)}`;
  }

  derive(e: VectorEntry): Promise<Buffer> {
    const id = VectorKeys.id(e);
    let key = this.pending.get(id);
    if (key === undefined) {
      key = (async () => {
        const prefix = await readPrefix(e.file);
        const derived = e.mode === 'ncrypt' ? await ncryptKey(secretOf(e), prefix) : masterKey(secretOf(e), prefix);
        this.ready.set(id, derived);
        return derived;
      })();
      this.pending.set(id, key);
    }
    return key;
  }

  async deriveAll(entries: readonly VectorEntry[]): Promise<void> {
    await Promise.all(entries.map((e) => this.derive(e)));
  }

  get(e: VectorEntry): Buffer {
    const key = this.ready.get(VectorKeys.id(e));
    if (key === undefined) throw new Error(`no key derived for ${e.file}: call deriveAll first`);
    return key;
  }
}
