import { Cipher, PACKAGE_OVERHEAD, PREFIX_SIZE } from './constants';
import { DareError } from './errors';
import { openSealedStream, sealBuffer } from './sealed-buffer';

/**
 * Sealed symlink targets (FORMAT.md §7): a cipher-directory symlink's target is
 * `"dare1:" + base64url_nopad(prefix || one DARE 2.0 package of the target)`, the key derived
 * from the prefix as for files. Pure: the caller derives the key.
 */
export const SEALED_LINK_MARKER = 'dare1:';

/** Longest plaintext target: its encoded form (4,092 bytes) stays under PATH_MAX (4,096). */
export const MAX_LINK_TARGET = 3000;

const MIN_DECODED = PREFIX_SIZE + PACKAGE_OVERHEAD + 1;
const MAX_DECODED = PREFIX_SIZE + PACKAGE_OVERHEAD + MAX_LINK_TARGET;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

/**
 * A cipher symlink whose target is not a sealed target, or does not authenticate: planted or
 * modified by whoever else writes to the cipher directory, or made before darefs sealed
 * symlinks. Never followed; the message never quotes the stored target.
 */
export class SealedLinkError extends Error {
  /** The symlink, when known: set by the layer that knows it. */
  link: string | undefined;

  constructor(
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super('', options);
    this.name = new.target.name;
    this.message = this.compose();
  }

  inLink(link: string): this {
    this.link = link;
    this.message = this.compose();
    return this;
  }

  private compose(): string {
    const where = this.link === undefined ? 'symlink' : `symlink ${this.link}`;
    return `${where}: ${this.reason}: not followed (darefs seals symlink targets; this one was not made through darefs, or was modified)`;
  }
}

/** A plaintext target longer than MAX_LINK_TARGET (ENAMETOOLONG). */
export class LinkTargetTooLongError extends Error {
  constructor(readonly length: number) {
    super(`symlink target of ${length} bytes: at most ${MAX_LINK_TARGET} bytes can be sealed`);
    this.name = new.target.name;
  }
}

/**
 * The stored target for `target` (1..MAX_LINK_TARGET bytes) under `key`, the key of `prefix`
 * (32 fresh random bytes: a new prefix, a new key, for every link).
 */
export function sealLinkTarget(target: Buffer, prefix: Buffer, key: Buffer, cipher: Cipher): string {
  if (target.length > MAX_LINK_TARGET) throw new LinkTargetTooLongError(target.length);
  // A DARE package holds at least one byte, and the kernel refuses empty targets anyway.
  if (target.length === 0) throw new RangeError('an empty symlink target cannot be sealed');
  return SEALED_LINK_MARKER + sealBuffer(target, prefix, key, cipher).toString('base64url');
}

/** A stored target taken apart: the prefix (to derive the key from) and the sealed package. */
export interface DecodedLink {
  prefix: Buffer;
  package: Buffer;
}

/** Parses a stored target (the bytes readlink gives) without a key; SealedLinkError if it has not the sealed form. */
export function decodeSealedLink(stored: Buffer): DecodedLink {
  const text = stored.toString('latin1');
  if (!text.startsWith(SEALED_LINK_MARKER)) throw new SealedLinkError(`target is not sealed (no "${SEALED_LINK_MARKER}" marker)`);
  const body = text.slice(SEALED_LINK_MARKER.length);
  if (!BASE64URL.test(body)) throw new SealedLinkError('sealed target is not base64url');
  const decoded = Buffer.from(body, 'base64url');
  // Only the canonical encoding: no stray trailing bits, no length base64 cannot produce.
  if (decoded.toString('base64url') !== body) throw new SealedLinkError('sealed target is not canonical base64url');
  if (decoded.length < MIN_DECODED || decoded.length > MAX_DECODED) {
    throw new SealedLinkError(`sealed target of ${decoded.length} bytes (a sealed target holds ${MIN_DECODED}..${MAX_DECODED})`);
  }
  return { prefix: decoded.subarray(0, PREFIX_SIZE), package: decoded.subarray(PREFIX_SIZE) };
}

/**
 * The target bytes of a decoded link, only if its one package is a final DARE 2.0 package
 * with nothing after it and its tag verifies under `key`; else SealedLinkError.
 */
export function openDecodedLink(link: DecodedLink, key: Buffer): Buffer {
  // An empty stream authenticates nothing, and no link has an empty target.
  if (link.package.length === 0) throw new SealedLinkError('sealed target holds no package');
  try {
    return openSealedStream(link.package, key);
  } catch (err) {
    if (err instanceof DareError) throw new SealedLinkError(`sealed target: ${err.detail}`, { cause: err });
    throw err;
  }
}

/**
 * The plaintext target length of a sealed target of `storedLength` bytes, without a key (a
 * symlink's st_size: gocryptfs reports the plaintext length too); undefined when no sealed
 * target has that length.
 */
export function sealedLinkPlainLength(storedLength: number): number | undefined {
  const b64 = storedLength - SEALED_LINK_MARKER.length;
  if (b64 < 0 || b64 % 4 === 1) return undefined;
  const decoded = Math.floor((b64 * 3) / 4);
  if (decoded < MIN_DECODED || decoded > MAX_DECODED) return undefined;
  return decoded - PREFIX_SIZE - PACKAGE_OVERHEAD;
}
