import * as crypto from 'node:crypto';
import { Cipher, LinkTargetTooLongError, MAX_LINK_TARGET, PREFIX_SIZE, SealedLinkError, decodeSealedLink, openDecodedLink, sealLinkTarget } from '../dare';
import type { KeySource } from './cipher-file';
import { withPrefixKey } from './sealed-buffer';

/**
 * Seals a symlink target under a fresh prefix (FORMAT.md §7): the stored target, as bytes for
 * symlink(2). Too long is refused before any key is derived (scrypt in ncrypt mode).
 */
export async function sealLink(keys: KeySource, cipher: Cipher, target: Buffer): Promise<Buffer> {
  if (target.length > MAX_LINK_TARGET) throw new LinkTargetTooLongError(target.length);
  const prefix = crypto.randomBytes(PREFIX_SIZE);
  return withPrefixKey(keys, prefix, (key) => Buffer.from(sealLinkTarget(target, prefix, key, cipher), 'latin1'));
}

/**
 * The plaintext target of a stored one, only if it is sealed and authenticates; else a
 * SealedLinkError naming `name` (never quoting what is stored).
 */
export async function openLink(keys: KeySource, stored: Buffer, name: string): Promise<Buffer> {
  try {
    const decoded = decodeSealedLink(stored);
    return await withPrefixKey(keys, Buffer.from(decoded.prefix), (key) => openDecodedLink(decoded, key));
  } catch (err) {
    if (err instanceof SealedLinkError) err.inLink(name);
    throw err;
  }
}
