import { ByteSource, ChunkReader } from './chunks';
import { Cipher, HEADER_SIZE, isKnownCipher, MAX_PACKAGE, MAX_PAYLOAD, PACKAGE_OVERHEAD, TAG_SIZE, Version } from './constants';
import {
  DataAfterFinalError,
  InvalidPayloadSizeError,
  NonceMismatchError,
  SequenceMismatchError,
  TruncatedStreamError,
  UnsupportedCipherError,
  UnsupportedVersionError,
} from './errors';
import { headerCipher, headerIsFinal, headerPayloadLength, headerSequence, headerVersion, sameStreamNonce } from './header';
import { openVerifiedPackage, randomNonce, sealPackage } from './package';

export interface EncryptOptions {
  version: Version;
  cipher: Cipher;
}

/**
 * Encrypts a plaintext stream into DARE packages (without the prefix, which the caller writes
 * first). Packages carry 65536 bytes except the last; an empty input yields no package. Holds
 * two payloads in memory: 2.0 must know whether a package is the last before sealing it.
 */
export async function* encryptStream(source: ByteSource, key: Buffer, opts: EncryptOptions): AsyncGenerator<Buffer> {
  const reader = new ChunkReader(source);
  const streamNonce = randomNonce(opts.version);
  try {
    let current = await reader.read(MAX_PAYLOAD);
    for (let index = 0; current.length > 0; index++) {
      const next = current.length === MAX_PAYLOAD ? await reader.read(MAX_PAYLOAD) : Buffer.alloc(0);
      const final = next.length === 0;
      // 1.0 gets a fresh random value per package, so any package can later be re-sealed alone.
      const nonce = opts.version === Version.V10 ? randomNonce(Version.V10) : streamNonce;
      yield sealPackage(key, { version: opts.version, cipher: opts.cipher, index, nonce, final }, current);
      current = next;
    }
  } finally {
    await reader.close();
  }
}

/**
 * Decrypts DARE packages (the stream after its prefix), releasing each package's plaintext only
 * after its tag verified. Accepts what sio's streaming decryptor accepts and rejects the rest
 * with the same error kinds, so `darefs decrypt` and `ncrypt -d` agree on every input.
 */
export async function* decryptStream(source: ByteSource, key: Buffer): AsyncGenerator<Buffer> {
  const reader = new ChunkReader(source);
  try {
    const first = await reader.read(1);
    if (first.length === 0) return;
    const version = first[0];
    const rest = reader;
    if (version === Version.V10) yield* decryptV10(first, rest, key);
    else if (version === Version.V20) yield* decryptV20(first, rest, key);
    else throw new UnsupportedVersionError(0, version);
  } finally {
    await reader.close();
  }
}

async function readAfter(head: Buffer | undefined, reader: ChunkReader, size: number): Promise<Buffer> {
  if (head === undefined) return reader.read(size);
  const more = await reader.read(size - head.length);
  return Buffer.concat([head, more]);
}

// 1.0: each package says its own length; a clean end at a package boundary is a valid end.
async function* decryptV10(head: Buffer, reader: ChunkReader, key: Buffer): AsyncGenerator<Buffer> {
  let carry: Buffer | undefined = head;
  for (let index = 0; ; index++) {
    const header = await readAfter(carry, reader, HEADER_SIZE);
    carry = undefined;
    if (header.length === 0) return;
    if (header.length < HEADER_SIZE) throw new InvalidPayloadSizeError(index, 'truncated package header');
    const length = headerPayloadLength(header);
    const body = await reader.read(length + TAG_SIZE);
    if (body.length < length + TAG_SIZE) throw new InvalidPayloadSizeError(index, 'truncated package');
    const version = headerVersion(header);
    if (version !== Version.V10) throw new UnsupportedVersionError(index, version);
    const cipher = headerCipher(header);
    if (!isKnownCipher(cipher)) throw new UnsupportedCipherError(index, cipher);
    const seq = headerSequence(header);
    if (seq !== index) throw new SequenceMismatchError(index, seq);
    yield openVerifiedPackage(key, Buffer.concat([header, body], HEADER_SIZE + body.length), index);
  }
}

// 2.0: fixed 65568-byte steps; only the final package may be short, and nothing may follow it.
async function* decryptV20(head: Buffer, reader: ChunkReader, key: Buffer): AsyncGenerator<Buffer> {
  let carry: Buffer | undefined = head;
  let reference: Buffer | undefined;
  let finished = false;
  for (let index = 0; ; index++) {
    const pkg = await readAfter(carry, reader, MAX_PACKAGE);
    carry = undefined;
    if (pkg.length === 0) {
      if (!finished) throw new TruncatedStreamError(index);
      return;
    }
    if (finished) throw new DataAfterFinalError(index);
    if (pkg.length <= PACKAGE_OVERHEAD) throw new InvalidPayloadSizeError(index, 'truncated package');
    const version = headerVersion(pkg);
    if (version !== Version.V20) throw new UnsupportedVersionError(index, version);
    const cipher = headerCipher(pkg);
    if (!isKnownCipher(cipher)) throw new UnsupportedCipherError(index, cipher);
    if (reference === undefined) {
      reference = Buffer.from(pkg.subarray(0, HEADER_SIZE));
    } else {
      if (cipher !== headerCipher(reference)) throw new UnsupportedCipherError(index, cipher, 'package 0 uses another');
      if (!sameStreamNonce(pkg, reference)) throw new NonceMismatchError(index);
    }
    const final = headerIsFinal(pkg);
    const length = headerPayloadLength(pkg);
    if (pkg.length !== length + PACKAGE_OVERHEAD) throw new InvalidPayloadSizeError(index, 'package length does not match its header');
    if (!final && length !== MAX_PAYLOAD) throw new InvalidPayloadSizeError(index, 'short package before the final one');
    yield openVerifiedPackage(key, pkg, index);
    finished = final;
  }
}
