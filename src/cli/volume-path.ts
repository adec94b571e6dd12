// `decrypt --volume CIPHERDIR --path PLAINPATH`: a file named by its path in the volume's
// plaintext view, mapped through the volume's name scheme (FORMAT.md §8) to its cipher file,
// which is opened confined beneath the cipher directory (FORMAT.md §6) like every other access.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { PathMap } from '../fuse/paths';
import { CONFIG_DIR } from '../keys';
import { CipherDir, type NameScheme } from '../store';
import { CliError, exitCodeFor, isErrno, messageFor, UsageError } from './errors';
import { ExitCode } from './exit-codes';

/** PLAINPATH checked and normalized ('a//b/./c' is 'a/b/c'): relative, no '..', not the root. */
export function checkPlainPath(p: string, command: string): string {
  const example = 'a path relative to the root of the plaintext view, e.g. docs/report.pdf';
  if (p.startsWith('/')) throw new UsageError(`--path ${p} is absolute: give ${example}`, command);
  const parts = p.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw new UsageError(`--path ${p} has a '..' component: give ${example}, without '..'`, command);
  if (parts.length === 0) throw new UsageError(`--path ${JSON.stringify(p)} names the root of the volume, not a file: give ${example}`, command);
  return parts.join('/');
}

export interface VolumeFile {
  /** For messages: the cipher path, and the plaintext path when names are encrypted. */
  name: string;
  handle: fs.promises.FileHandle;
  stats: fs.Stats;
}

/**
 * Opens the cipher file of `plainRel` (checkPlainPath's result) for reading: a regular file
 * beneath `volume` reached with no symlink (a symlink of the plaintext view is refused, not
 * followed). Errors name the plaintext path and the cipher path.
 */
export async function openVolumeFile(volume: string, plainRel: string, names: NameScheme): Promise<VolumeFile> {
  const dir = CipherDir.open(volume);
  try {
    const map = new PathMap(dir.root, names);
    const hidden = plainRel.split('/').some((_, i, parts) => map.isHidden('/' + parts.slice(0, i + 1).join('/')));
    if (hidden) {
      throw new CliError(`${plainRel} is not in the plaintext view of ${volume}: ${CONFIG_DIR} and temporary files are darefs's own`, ExitCode.ERROR);
    }
    const cipherRel = names.toCipher(plainRel);
    const cipherPath = path.join(volume, cipherRel);
    const inVolume = `${plainRel} in the volume ${volume} (cipher path ${cipherPath})`;
    try {
      const st = dir.lstat(cipherRel);
      if (st.isDirectory()) throw new CliError(`${inVolume} is a directory: give a file`, ExitCode.ERROR);
      if (st.isSymbolicLink()) throw new CliError(`${inVolume} is a symlink: give the path of the file it points to`, ExitCode.ERROR);
      const handle = await dir.openHandle(cipherRel, fs.constants.O_RDONLY);
      try {
        const stats = await handle.stat();
        return { name: names.encrypted ? `${cipherPath} (${plainRel})` : cipherPath, handle, stats };
      } catch (err) {
        await handle.close();
        throw err;
      }
    } catch (err) {
      if (err instanceof CliError) throw err;
      if (isErrno(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) {
        throw new CliError(`${plainRel} does not exist in the volume ${volume}: there is no ${cipherPath}`, ExitCode.ERROR, { cause: err });
      }
      throw new CliError(`cannot open ${inVolume}: ${messageFor(err)}`, exitCodeFor(err), { cause: err });
    }
  } finally {
    dir.close();
  }
}
