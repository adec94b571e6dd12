import { MAX_PACKAGE, MAX_PAYLOAD, PACKAGE_OVERHEAD, PREFIX_SIZE } from './constants';
import { InvalidLengthError, ShortPrefixError } from './errors';

/**
 * Plaintext size of a regular stream from its cipher file size alone (FORMAT.md §2), or
 * undefined when no regular stream has that size. Needs no key: getattr uses it.
 */
export function plaintextSizeOrUndefined(cipherSize: number): number | undefined {
  const n = cipherSize - PREFIX_SIZE;
  if (n < 0) return undefined;
  const full = Math.floor(n / MAX_PACKAGE);
  const rest = n % MAX_PACKAGE;
  if (rest > 0 && rest <= PACKAGE_OVERHEAD) return undefined;
  return full * MAX_PAYLOAD + (rest > 0 ? rest - PACKAGE_OVERHEAD : 0);
}

/** As plaintextSizeOrUndefined, but throws the typed error that explains the bad size. */
export function plaintextSize(cipherSize: number): number {
  const size = plaintextSizeOrUndefined(cipherSize);
  if (size !== undefined) return size;
  if (cipherSize < PREFIX_SIZE) throw new ShortPrefixError(cipherSize);
  throw new InvalidLengthError(Math.floor((cipherSize - PREFIX_SIZE) / MAX_PACKAGE), cipherSize);
}

/** Cipher file size of a regular stream holding `plainSize` bytes. */
export function cipherSize(plainSize: number): number {
  return PREFIX_SIZE + plainSize + packageCount(plainSize) * PACKAGE_OVERHEAD;
}

export function packageCount(plainSize: number): number {
  return Math.ceil(plainSize / MAX_PAYLOAD);
}

/** Index of the package holding plaintext byte `offset`. */
export function packageIndex(offset: number): number {
  return Math.floor(offset / MAX_PAYLOAD);
}

/** Cipher file offset where package `index` starts. */
export function packageOffset(index: number): number {
  return PREFIX_SIZE + index * MAX_PACKAGE;
}

/** Plaintext bytes package `index` carries in a stream of `plainSize` bytes (0 past the end). */
export function payloadLength(index: number, plainSize: number): number {
  const start = index * MAX_PAYLOAD;
  if (start >= plainSize) return 0;
  return Math.min(MAX_PAYLOAD, plainSize - start);
}
