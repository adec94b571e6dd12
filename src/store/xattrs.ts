import { Cipher, DareError, NameError, PREFIX_SIZE, cipherNameLength } from '../dare';
import type { KeySource } from './cipher-file';
import { InvalidAttrNameError, NameTooLongError, NoSuchAttributeError, SealedAttrError } from './errors';
import { isPlainText, nameBytes } from './name-text';
import { EncryptedNames, NameScheme } from './names';
import { openSealed, sealFresh } from './sealed-buffer';

/**
 * How `user.*` extended attributes are stored on cipher inodes. With plain names, as they are.
 * With encrypted names (FORMAT.md §8) both halves are sealed: the stored name is `user.` and the
 * cipher name of the bytes after it (the file names' keys and construction: deterministic, so a
 * get or remove finds it without listing), the stored value `prefix || DARE 2.0 stream` under a
 * fresh prefix per set, as a symlink target is sealed (§7) but kept as raw bytes.
 * Names here are strings as name-text.ts writes them (lossless for any bytes).
 */

/** The one namespace kept (src/fuse/ops.ts says why). */
export const USER_PREFIX = 'user.';
/** Longest attribute name Linux has (XATTR_NAME_MAX): the stored name must fit it too. */
export const XATTR_NAME_MAX = 255;

/** Longest plaintext attribute name (bytes, `user.` included) whose sealed name fits XATTR_NAME_MAX. */
export const MAX_SEALED_ATTR_NAME = ((): number => {
  let n = 1;
  while (USER_PREFIX.length + cipherNameLength(n + 1) <= XATTR_NAME_MAX) n++;
  return USER_PREFIX.length + n;
})();

export function isUserAttr(name: string): boolean {
  return name.startsWith(USER_PREFIX);
}

/** A stored name that shows no plaintext name (listed nowhere, reported). */
export interface RefusedAttr {
  readonly stored: string;
  readonly reason: string;
}

export interface AttrListing {
  /** Plaintext names, user.* only. */
  readonly names: string[];
  readonly refused: RefusedAttr[];
}

export interface AttrStore {
  /** Whether names and values are sealed. */
  readonly sealed: boolean;
  /** The stored name to set `name` (user.*) under: InvalidAttrNameError or NameTooLongError when it cannot be stored. */
  nameToSet(name: string): string;
  /** The stored name to get or remove `name` (user.*) by: NoSuchAttributeError when no stored attribute can have it. */
  nameToFind(name: string): string;
  /** The plaintext names of the stored names of an inode; other namespaces are left out. */
  list(stored: string[]): AttrListing;
  /** The stored form of a value. */
  sealValue(value: Buffer): Promise<Buffer>;
  /** The value of a stored one; SealedAttrError (naming `path` and `name`) unless it authenticates. */
  openValue(stored: Buffer, path: string, name: string): Promise<Buffer>;
}

/** The attribute store of a volume: sealed when its names are encrypted. */
export function attrStore(names: NameScheme, keys: KeySource, cipher: Cipher): AttrStore {
  return names instanceof EncryptedNames ? new SealedAttrs(names, keys, cipher) : new PlainAttrs();
}

/** Stored as given. node:fs and the addon take names as strings, so they must be UTF-8. */
class PlainAttrs implements AttrStore {
  readonly sealed = false;

  nameToSet(name: string): string {
    if (!isPlainText(name)) {
      throw new InvalidAttrNameError(name, 'a name that is not UTF-8 needs a volume with encrypted names (darefs init --encrypt-names)');
    }
    return name;
  }

  nameToFind(name: string): string {
    if (!isPlainText(name)) throw new NoSuchAttributeError(name, 'a volume with plain names stores no name that is not UTF-8');
    return name;
  }

  list(stored: string[]): AttrListing {
    return { names: stored.filter(isUserAttr), refused: [] };
  }

  sealValue(value: Buffer): Promise<Buffer> {
    return Promise.resolve(value);
  }

  openValue(stored: Buffer): Promise<Buffer> {
    return Promise.resolve(stored);
  }
}

class SealedAttrs implements AttrStore {
  readonly sealed = true;

  constructor(
    private readonly names: EncryptedNames,
    private readonly keys: KeySource,
    private readonly cipher: Cipher,
  ) {}

  /** The sealed name, or why there is none (an error for the caller to throw or translate). */
  private seal(name: string): string | InvalidAttrNameError | NameTooLongError {
    if (!isUserAttr(name)) return new InvalidAttrNameError(name, `only ${USER_PREFIX}* attributes are sealed`);
    const rest = name.slice(USER_PREFIX.length);
    const bytes = nameBytes(rest).length;
    // As the cipher file system answers a bare "user." (ext4: EINVAL).
    if (bytes === 0) return new InvalidAttrNameError(name, `nothing after "${USER_PREFIX}"`);
    if (USER_PREFIX.length + cipherNameLength(bytes) > XATTR_NAME_MAX) {
      return new NameTooLongError(`extended attribute name ${JSON.stringify(name)}`, USER_PREFIX.length + bytes, MAX_SEALED_ATTR_NAME);
    }
    return USER_PREFIX + this.names.cipherName(rest);
  }

  nameToSet(name: string): string {
    const sealed = this.seal(name);
    if (typeof sealed !== 'string') throw sealed;
    return sealed;
  }

  nameToFind(name: string): string {
    const sealed = this.seal(name);
    if (sealed instanceof NameTooLongError) throw new NoSuchAttributeError(name, sealed.message);
    if (typeof sealed !== 'string') throw sealed;
    return sealed;
  }

  list(stored: string[]): AttrListing {
    const names: string[] = [];
    const refused: RefusedAttr[] = [];
    for (const s of stored) {
      if (!isUserAttr(s)) continue;
      try {
        const name = USER_PREFIX + this.names.openName(s.slice(USER_PREFIX.length));
        // Authenticated, so sealed by us from a name the kernel gave; checked anyway, as a NUL
        // would split the list the kernel gets.
        if (name.includes('\0')) refused.push({ stored: s, reason: 'opens to a name with a NUL byte' });
        else names.push(name);
      } catch (err) {
        if (!(err instanceof NameError)) throw err;
        refused.push({ stored: s, reason: err.reason });
      }
    }
    return { names, refused };
  }

  sealValue(value: Buffer): Promise<Buffer> {
    return sealFresh(this.keys, this.cipher, value);
  }

  async openValue(stored: Buffer, path: string, name: string): Promise<Buffer> {
    if (stored.length < PREFIX_SIZE) throw new SealedAttrError(path, name, `stored value of ${stored.length} bytes is shorter than its ${PREFIX_SIZE}-byte prefix`);
    try {
      return await openSealed(this.keys, stored);
    } catch (err) {
      if (err instanceof DareError) throw new SealedAttrError(path, name, `sealed value: ${err.detail}`, { cause: err });
      throw err;
    }
  }
}
