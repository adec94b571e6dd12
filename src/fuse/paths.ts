import * as path from 'node:path';
import { NameScheme, TEMP_PREFIX } from '../store';

/** darefs's own metadata directory at the root of the cipher directory (FORMAT.md §1). */
export const META_DIR = '.darefs';

/**
 * Maps plaintext paths (as FUSE gives them, starting with '/') to cipher paths (absolute,
 * beneath `root`) through the volume's name scheme.
 */
export class PathMap {
  constructor(
    readonly root: string,
    readonly names: NameScheme,
  ) {}

  cipher(plainPath: string): string {
    return plainPath === '/' ? this.root : this.root + '/' + this.names.toCipher(plainPath.slice(1));
  }

  /** The plaintext name of a cipher path, for messages. */
  plain(cipherPath: string): string {
    return cipherPath === this.root ? '/' : '/' + this.names.toPlain(cipherPath.slice(this.root.length + 1));
  }

  /**
   * Names that never appear in, and can never be made through, the plaintext view: with plain
   * names, those of darefs's own entries. Encrypted names never collide with them.
   */
  isHidden(plainPath: string): boolean {
    if (this.names.encrypted) return false;
    if (plainPath === '/' + META_DIR || plainPath.startsWith('/' + META_DIR + '/')) return true;
    return path.posix.basename(plainPath).startsWith(TEMP_PREFIX);
  }
}
