/** Byte sizes of the on-disk layout (FORMAT.md §2, §3). */
export const PREFIX_SIZE = 32;
export const HEADER_SIZE = 16;
export const TAG_SIZE = 16;
export const MAX_PAYLOAD = 65536;
/** Header plus tag: what one package adds to its plaintext. */
export const PACKAGE_OVERHEAD = HEADER_SIZE + TAG_SIZE;
export const MAX_PACKAGE = MAX_PAYLOAD + PACKAGE_OVERHEAD;
export const KEY_SIZE = 32;

export const enum Version {
  V10 = 0x10,
  V20 = 0x20,
}

export const enum Cipher {
  AES_256_GCM = 0x00,
  CHACHA20_POLY1305 = 0x01,
}

export type CipherName = 'aes' | 'chacha';
export type VersionName = '1.0' | '2.0';

export function cipherFromName(name: CipherName): Cipher {
  return name === 'aes' ? Cipher.AES_256_GCM : Cipher.CHACHA20_POLY1305;
}

export function versionFromName(name: VersionName): Version {
  return name === '1.0' ? Version.V10 : Version.V20;
}

export function isKnownCipher(c: number): c is Cipher {
  return c === Cipher.AES_256_GCM || c === Cipher.CHACHA20_POLY1305;
}
