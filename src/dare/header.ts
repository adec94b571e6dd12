import { HEADER_SIZE, Version } from './constants';

/** Views of a package header (FORMAT.md §3); `buf` must hold at least HEADER_SIZE bytes. */
export function headerVersion(buf: Buffer): number {
  return buf[0];
}

export function headerCipher(buf: Buffer): number {
  return buf[1];
}

/** Payload length in bytes (1..65536), from the length-minus-one field. */
export function headerPayloadLength(buf: Buffer): number {
  return buf.readUInt16LE(2) + 1;
}

/** DARE 1.0: the sequence number. */
export function headerSequence(buf: Buffer): number {
  return buf.readUInt32LE(4);
}

/** DARE 2.0: whether the final-package flag is set. */
export function headerIsFinal(buf: Buffer): boolean {
  return (buf[4] & 0x80) !== 0;
}

/** DARE 2.0: whether two headers carry the same stream nonce (the final flag aside). */
export function sameStreamNonce(a: Buffer, b: Buffer): boolean {
  if ((a[4] & 0x7f) !== (b[4] & 0x7f)) return false;
  return a.subarray(5, HEADER_SIZE).equals(b.subarray(5, HEADER_SIZE));
}

/** The additional data the AEAD authenticates: header bytes 0..3. */
export function headerAad(buf: Buffer): Buffer {
  return buf.subarray(0, 4);
}

/** The AEAD nonce of package `index` (12 bytes, freshly allocated). */
export function aeadNonce(header: Buffer, index: number): Buffer {
  const nonce = Buffer.from(header.subarray(4, HEADER_SIZE));
  if (header[0] === Version.V20) {
    nonce.writeUInt32LE((nonce.readUInt32LE(8) ^ index) >>> 0, 8);
  }
  return nonce;
}

export interface HeaderFields {
  version: Version;
  cipher: number;
  payloadLength: number;
  /** 1.0: the package index; ignored for 2.0. */
  sequence: number;
  /** 1.0: 8 random bytes; 2.0: the stream's 12-byte nonce (final flag cleared). */
  nonce: Buffer;
  /** 2.0 only. */
  final: boolean;
}

export function writeHeader(out: Buffer, h: HeaderFields): void {
  out[0] = h.version;
  out[1] = h.cipher;
  out.writeUInt16LE(h.payloadLength - 1, 2);
  if (h.version === Version.V10) {
    out.writeUInt32LE(h.sequence >>> 0, 4);
    h.nonce.copy(out, 8, 0, 8);
  } else {
    h.nonce.copy(out, 4, 0, 12);
    out[4] = h.final ? out[4] | 0x80 : out[4] & 0x7f;
  }
}
