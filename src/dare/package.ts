import * as crypto from 'node:crypto';
import { aeadOpen, aeadSeal } from './aead';
import { Cipher, HEADER_SIZE, isKnownCipher, MAX_PAYLOAD, TAG_SIZE, Version } from './constants';
import {
  AuthenticationError,
  DataAfterFinalError,
  InvalidPayloadSizeError,
  IrregularStreamError,
  NonceMismatchError,
  SequenceMismatchError,
  TruncatedStreamError,
  UnsupportedCipherError,
  UnsupportedVersionError,
} from './errors';
import {
  aeadNonce,
  headerAad,
  headerCipher,
  headerIsFinal,
  headerPayloadLength,
  headerSequence,
  headerVersion,
  sameStreamNonce,
  writeHeader,
} from './header';

// One randomBytes call per 512 nonces: a call costs microseconds, a seal about fifty.
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let poolUsed = 0;

/**
 * Fresh random nonce bytes (a new buffer): 8 per package for 1.0, 12 per stream for 2.0
 * (FORMAT.md §5). Every byte handed out comes from crypto.randomBytes and is handed out once.
 */
export function randomNonce(version: Version): Buffer {
  const size = version === Version.V10 ? 8 : 12;
  if (poolUsed + size > pool.length) {
    pool = crypto.randomBytes(POOL_SIZE);
    poolUsed = 0;
  }
  const nonce = Buffer.from(pool.subarray(poolUsed, poolUsed + size));
  pool.fill(0, poolUsed, poolUsed + size);
  poolUsed += size;
  return nonce;
}

export interface SealOptions {
  version: Version;
  cipher: Cipher;
  index: number;
  /** 1.0: 8 fresh random bytes for this package; 2.0: the stream's 12-byte nonce. */
  nonce: Buffer;
  /** 2.0: whether this is the final package. */
  final: boolean;
}

/** Seals one package: header || ciphertext || tag, in one new buffer. */
export function sealPackage(key: Buffer, opts: SealOptions, plaintext: Buffer): Buffer {
  if (plaintext.length < 1 || plaintext.length > MAX_PAYLOAD) {
    throw new RangeError(`package payload of ${plaintext.length} bytes`);
  }
  const out = Buffer.allocUnsafe(HEADER_SIZE + plaintext.length + TAG_SIZE);
  const header = out.subarray(0, HEADER_SIZE);
  writeHeader(header, {
    version: opts.version,
    cipher: opts.cipher,
    payloadLength: plaintext.length,
    sequence: opts.index,
    nonce: opts.nonce,
    final: opts.final,
  });
  aeadSeal(opts.cipher, key, aeadNonce(header, opts.index), headerAad(header), plaintext, out.subarray(HEADER_SIZE));
  return out;
}

/** What random access knows about package `index` before reading it. */
export interface PackageExpectation {
  index: number;
  /** Plaintext bytes the size arithmetic says it holds. */
  payloadLength: number;
  /** Whether it is the last package of the stream. */
  last: boolean;
  /** Header of package 0: fixes version, and for 2.0 the cipher and nonce (FORMAT.md §3). */
  reference: Buffer;
}

/**
 * Checks a header for random access, as strictly as streaming decryption would: throws the typed
 * error for the first rule it breaks.
 */
export function verifyHeader(header: Buffer, want: PackageExpectation): void {
  const { index } = want;
  const version = headerVersion(header);
  const refVersion = headerVersion(want.reference);
  if (version !== Version.V10 && version !== Version.V20) throw new UnsupportedVersionError(index, version);
  if (version !== refVersion) throw new UnsupportedVersionError(index, version);
  const cipher = headerCipher(header);
  if (!isKnownCipher(cipher)) throw new UnsupportedCipherError(index, cipher);
  const length = headerPayloadLength(header);
  if (version === Version.V10) {
    const seq = headerSequence(header);
    if (seq !== index) throw new SequenceMismatchError(index, seq);
    if (length !== want.payloadLength) {
      if (!want.last && length < MAX_PAYLOAD) throw new IrregularStreamError(index);
      throw new InvalidPayloadSizeError(index, `payload length ${length} where ${want.payloadLength} was expected`);
    }
    return;
  }
  if (cipher !== headerCipher(want.reference)) {
    throw new UnsupportedCipherError(index, cipher, 'package 0 uses another');
  }
  if (!sameStreamNonce(header, want.reference)) throw new NonceMismatchError(index);
  const final = headerIsFinal(header);
  if (final && !want.last) throw new DataAfterFinalError(index + 1);
  if (!final && want.last) {
    // A full package cut short is a truncated package; a whole one without the flag means the
    // packages after it are missing.
    if (length === MAX_PAYLOAD && length === want.payloadLength) throw new TruncatedStreamError(index + 1);
    if (length !== want.payloadLength) {
      throw new InvalidPayloadSizeError(index, `payload length ${length} where ${want.payloadLength} was expected`);
    }
    throw new InvalidPayloadSizeError(index, 'last package is not marked final');
  }
  if (length !== want.payloadLength) {
    throw new InvalidPayloadSizeError(index, `payload length ${length} where ${want.payloadLength} was expected`);
  }
}

/**
 * Opens a package whose header has been verified (verifyHeader, or the streaming checks).
 * `pkg` is exactly header || ciphertext || tag. Returns the plaintext only if the tag verifies.
 */
export function openVerifiedPackage(key: Buffer, pkg: Buffer, index: number): Buffer {
  const header = pkg.subarray(0, HEADER_SIZE);
  const plaintext = aeadOpen(headerCipher(header) as Cipher, key, aeadNonce(header, index), headerAad(header), pkg.subarray(HEADER_SIZE));
  if (plaintext === undefined) throw new AuthenticationError(index);
  return plaintext;
}

/** verifyHeader then openVerifiedPackage: the random-access read of one package. */
export function openPackage(key: Buffer, pkg: Buffer, want: PackageExpectation): Buffer {
  if (pkg.length !== HEADER_SIZE + want.payloadLength + TAG_SIZE) {
    throw new InvalidPayloadSizeError(want.index, `package of ${pkg.length} bytes`);
  }
  verifyHeader(pkg, want);
  return openVerifiedPackage(key, pkg, want.index);
}
