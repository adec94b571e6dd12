import * as crypto from 'node:crypto';
import { Cipher, PREFIX_SIZE, openSealedStream, sealBuffer, splitSealedBuffer } from '../dare';
import type { KeySource } from './cipher-file';

/** Runs `use` with the key of `prefix`, and zeroes the key after. */
export async function withPrefixKey<T>(keys: KeySource, prefix: Buffer, use: (key: Buffer) => T): Promise<T> {
  const key = await keys.key(prefix);
  try {
    return use(key);
  } finally {
    key.fill(0);
  }
}

/**
 * Seals a small buffer (at most one package) as `prefix || DARE 2.0 stream` under a fresh random
 * prefix: a new key for every seal, so no key and nonce ever seal two plaintexts (FORMAT.md §5).
 */
export function sealFresh(keys: KeySource, cipher: Cipher, data: Buffer): Promise<Buffer> {
  const prefix = crypto.randomBytes(PREFIX_SIZE);
  return withPrefixKey(keys, prefix, (key) => sealBuffer(data, prefix, key, cipher));
}

/** The plaintext of a buffer sealFresh made; a DareError unless it authenticates. */
export async function openSealed(keys: KeySource, sealed: Buffer): Promise<Buffer> {
  const { prefix, stream } = splitSealedBuffer(sealed);
  return withPrefixKey(keys, Buffer.from(prefix), (key) => openSealedStream(stream, key));
}
