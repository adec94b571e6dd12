import * as path from 'node:path';
import { TEMP_PREFIX } from '../store';

/** darefs's own metadata directory at the root of the cipher directory (FORMAT.md §1). */
export const META_DIR = '.darefs';

/** Maps plaintext paths (as FUSE gives them, starting with '/') to cipher paths. */
export class PathMap {
  constructor(readonly root: string) {}

  cipher(plainPath: string): string {
    return plainPath === '/' ? this.root : this.root + plainPath;
  }

  /** The plaintext name of a cipher path, for messages. */
  plain(cipherPath: string): string {
    return cipherPath === this.root ? '/' : cipherPath.slice(this.root.length);
  }

  /** Names that never appear in, and can never be made through, the plaintext view. */
  isHidden(plainPath: string): boolean {
    if (plainPath === '/' + META_DIR || plainPath.startsWith('/' + META_DIR + '/')) return true;
    return path.posix.basename(plainPath).startsWith(TEMP_PREFIX);
  }

  isHiddenEntry(dirPlainPath: string, name: string): boolean {
    return (dirPlainPath === '/' && name === META_DIR) || name.startsWith(TEMP_PREFIX);
  }
}
