import * as crypto from 'node:crypto';

/**
 * Encrypted names (FORMAT.md §8): pure functions over buffers. A name is padded (PKCS#7, 16),
 * its IV is a MAC of the padded name (deterministic: a lookup derives the cipher name, no
 * directory scan), and it is encrypted with AES-256-CTR under that IV. Opening recomputes the
 * MAC, so a forged or damaged name is refused, never shown as something else.
 */

export const NAME_KEY_SIZE = 32;
const BLOCK = 16;
const IV_SIZE = 16;
/** Longest name one directory entry may have (NAME_MAX on Linux file systems). */
export const NAME_MAX = 255;
/** Entry name of a cipher name longer than NAME_MAX: this prefix and a hash of the full name. */
export const LONG_NAME_PREFIX = 'dare1.long.';
/** The sibling file that holds a long name's full cipher name. */
export const LONG_NAME_SUFFIX = '.name';
/** Longest cipher name of a NAME_MAX-byte plaintext name (what a `.name` file may hold). */
export const MAX_CIPHER_NAME = cipherNameLength(NAME_MAX);

/** The two name keys: MAC first, then encryption (HKDF output order, §8). The owner zeroes them. */
export interface NameKeys {
  readonly mac: Buffer;
  readonly enc: Buffer;
}

export class NameError extends Error {
  override readonly name = 'NameError';
  constructor(
    /** The stored name (as found in the cipher directory). */
    readonly stored: string,
    readonly reason: string,
  ) {
    super(`cipher name ${JSON.stringify(stored.length > 80 ? stored.slice(0, 77) + '...' : stored)} ${reason}`);
  }
}

/** Length of the cipher name of an `n`-byte plaintext name (no key needed: it depends on n only). */
export function cipherNameLength(n: number): number {
  return base64Length(IV_SIZE + paddedLength(n));
}

function paddedLength(n: number): number {
  return (Math.floor(n / BLOCK) + 1) * BLOCK;
}

function base64Length(bytes: number): number {
  return Math.ceil((bytes * 4) / 3);
}

function pad(name: Buffer): Buffer {
  const p = paddedLength(name.length);
  const out = Buffer.alloc(p, p - name.length);
  name.copy(out);
  return out;
}

function ivOf(keys: NameKeys, padded: Buffer): Buffer {
  return crypto.createHmac('sha256', keys.mac).update(padded).digest().subarray(0, IV_SIZE);
}

function ctr(key: Buffer, iv: Buffer, data: Buffer): Buffer {
  const c = crypto.createCipheriv('aes-256-ctr', key, iv);
  return Buffer.concat([c.update(data), c.final()]);
}

/** The cipher name of a plaintext name (its bytes): base64url, no padding. */
export function encryptName(keys: NameKeys, name: Buffer): string {
  if (name.length === 0) throw new RangeError('a name cannot be empty');
  const padded = pad(name);
  const iv = ivOf(keys, padded);
  return Buffer.concat([iv, ctr(keys.enc, iv, padded)]).toString('base64url');
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** The plaintext name of a cipher name; NameError unless it authenticates. */
export function decryptName(keys: NameKeys, stored: string): Buffer {
  if (!BASE64URL.test(stored)) throw new NameError(stored, 'is not base64url');
  const raw = Buffer.from(stored, 'base64url');
  // Canonical only: one plaintext name has exactly one cipher name.
  if (raw.toString('base64url') !== stored) throw new NameError(stored, 'is not canonical base64url');
  if (raw.length < IV_SIZE + BLOCK || (raw.length - IV_SIZE) % BLOCK !== 0) throw new NameError(stored, 'has an impossible length');
  const iv = raw.subarray(0, IV_SIZE);
  const padded = ctr(keys.enc, iv, raw.subarray(IV_SIZE));
  if (!crypto.timingSafeEqual(ivOf(keys, padded), iv)) throw new NameError(stored, 'does not authenticate (forged, damaged, or another volume\'s)');
  const n = padded[padded.length - 1];
  // Authenticated, so the padding is ours; checked anyway, as a MAC key could be misused.
  if (n < 1 || n > BLOCK || padded.subarray(padded.length - n).some((b) => b !== n)) throw new NameError(stored, 'has bad padding');
  return padded.subarray(0, padded.length - n);
}

/** Whether a cipher name fits one directory entry; if not, it is stored as a long name. */
export function fitsEntry(cipherName: string): boolean {
  return cipherName.length <= NAME_MAX;
}

/** The entry name of a cipher name too long for one entry: prefix + base64url(SHA-256(full)). */
export function longEntryName(cipherName: string): string {
  return LONG_NAME_PREFIX + crypto.createHash('sha256').update(cipherName, 'latin1').digest('base64url');
}

/** The directory entry for a cipher name: itself, or its long-name entry. */
export function entryName(cipherName: string): string {
  return fitsEntry(cipherName) ? cipherName : longEntryName(cipherName);
}

const LONG_ENTRY = /^dare1\.long\.[A-Za-z0-9_-]{43}$/;

export function isLongEntry(entry: string): boolean {
  return LONG_ENTRY.test(entry);
}

/** Whether `entry` is the `.name` file of a long-name entry. */
export function isLongNameFile(entry: string): boolean {
  return entry.endsWith(LONG_NAME_SUFFIX) && isLongEntry(entry.slice(0, -LONG_NAME_SUFFIX.length));
}
