import { Cipher, HEADER_SIZE, MAX_PAYLOAD, PACKAGE_OVERHEAD, PREFIX_SIZE, Version } from './constants';
import { InvalidPayloadSizeError, NotVersion20Error, ShortPrefixError } from './errors';
import { headerVersion } from './header';
import { openPackage, randomNonce, sealPackage } from './package';

/**
 * A small buffer sealed on its own (a symlink target, FORMAT.md §7; an extended attribute value,
 * §8): `prefix || DARE 2.0 stream`, the key derived from the prefix as for files. At most one
 * package, so the stream is empty (no package) or one final package. Always 2.0: the final flag
 * is what shows nothing was cut off. Pure: the caller derives the key.
 */

/** Longest buffer sealed here: one package. */
export const MAX_SEALED_BUFFER = MAX_PAYLOAD;

/** The sealed form of `data` under `key`, the key of `prefix` (32 fresh random bytes: never seal twice under one). */
export function sealBuffer(data: Buffer, prefix: Buffer, key: Buffer, cipher: Cipher): Buffer {
  if (prefix.length !== PREFIX_SIZE) throw new RangeError(`prefix of ${prefix.length} bytes`);
  if (data.length > MAX_SEALED_BUFFER) throw new RangeError(`${data.length} bytes do not fit one package`);
  // An empty plaintext is an empty stream (FORMAT.md §2): a package holds at least one byte.
  if (data.length === 0) return Buffer.from(prefix);
  const pkg = sealPackage(key, { version: Version.V20, cipher, index: 0, nonce: randomNonce(Version.V20), final: true }, data);
  return Buffer.concat([prefix, pkg]);
}

/** A sealed buffer taken apart without a key: the prefix (to derive the key from) and its stream. */
export interface SplitBuffer {
  prefix: Buffer;
  stream: Buffer;
}

/** Splits a sealed buffer (views into `sealed`); a DareError when it is shorter than a prefix. */
export function splitSealedBuffer(sealed: Buffer): SplitBuffer {
  if (sealed.length < PREFIX_SIZE) throw new ShortPrefixError(sealed.length);
  return { prefix: sealed.subarray(0, PREFIX_SIZE), stream: sealed.subarray(PREFIX_SIZE) };
}

/**
 * The plaintext of a sealed buffer's stream, only if it is empty or exactly one final DARE 2.0
 * package whose tag verifies under `key`: as strict as a one-package file. Else a DareError.
 */
export function openSealedStream(stream: Buffer, key: Buffer): Buffer {
  if (stream.length === 0) return Buffer.alloc(0);
  if (stream.length <= PACKAGE_OVERHEAD) throw new InvalidPayloadSizeError(0, `package of ${stream.length} bytes`);
  const header = stream.subarray(0, HEADER_SIZE);
  const version = headerVersion(header);
  if (version !== Version.V20) throw new NotVersion20Error(0, version);
  // Exact length, a known cipher, the final flag and the tag.
  return openPackage(key, stream, { index: 0, payloadLength: stream.length - PACKAGE_OVERHEAD, last: true, reference: header });
}
