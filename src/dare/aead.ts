import * as crypto from 'node:crypto';
import { Cipher, TAG_SIZE } from './constants';

// The cast picks the GCM overloads; ChaCha20-Poly1305 has the same AEAD interface.
function algorithm(cipher: Cipher): crypto.CipherGCMTypes {
  return (cipher === Cipher.AES_256_GCM ? 'aes-256-gcm' : 'chacha20-poly1305') as crypto.CipherGCMTypes;
}

/**
 * Encrypts `plaintext` into `out` (ciphertext then 16-byte tag, plaintext.length + 16 bytes).
 */
export function aeadSeal(cipher: Cipher, key: Buffer, nonce: Buffer, aad: Buffer, plaintext: Buffer, out: Buffer): void {
  const c = crypto.createCipheriv(algorithm(cipher), key, nonce, { authTagLength: TAG_SIZE });
  c.setAAD(aad, { plaintextLength: plaintext.length });
  let n = c.update(plaintext).copy(out, 0);
  n += c.final().copy(out, n);
  c.getAuthTag().copy(out, n);
}

/**
 * Decrypts ciphertext||tag; returns undefined (after zeroing what was decrypted) when the tag does
 * not verify, so no unauthenticated plaintext ever leaves this function.
 */
export function aeadOpen(cipher: Cipher, key: Buffer, nonce: Buffer, aad: Buffer, sealed: Buffer): Buffer | undefined {
  const ctLength = sealed.length - TAG_SIZE;
  const d = crypto.createDecipheriv(algorithm(cipher), key, nonce, { authTagLength: TAG_SIZE });
  d.setAAD(aad, { plaintextLength: ctLength });
  d.setAuthTag(sealed.subarray(ctLength));
  const plaintext = d.update(sealed.subarray(0, ctLength));
  try {
    d.final();
    return plaintext;
  } catch {
    plaintext.fill(0);
    return undefined;
  }
}
