/**
 * Volumes (with encrypted names, FORMAT.md §8, or plain ones) filled without a mount: `darefs
 * init [--encrypt-names]`, then the store as the daemon uses it (openVolume, the volume's
 * NameScheme for every name and long name's `.name` file, Volume.create for contents, sealed
 * symlink targets).
 */
import * as fs from 'node:fs';
import { openVolume, type NameScheme, type OpenedVolume } from '../../src/store';
import type { MountDirs } from './mount';
import { PASSPHRASE, initMasterVolume } from './rw';

export interface NamedVolumeWriter {
  readonly opened: OpenedVolume;
  readonly names: NameScheme;
  /** The cipher path (relative to the cipher directory) of a plaintext path. */
  cipherPath(plain: string): string;
  mkdir(plain: string): void;
  writeFile(plain: string, data: Buffer | string): Promise<void>;
  symlink(plain: string, target: string): Promise<void>;
}

/** `darefs init --encrypt-names` of the harness's cipher directory (passphrase PASSPHRASE). */
export async function initNamedVolume(dirs: MountDirs): Promise<void> {
  await initMasterVolume(dirs, dirs.cipherDir, ['--encrypt-names']);
}

/** Opens the volume in `dirs.cipherDir` read-write (passphrase PASSPHRASE), runs `fill`, and closes it. */
export async function fillVolume(dirs: MountDirs, fill: (w: NamedVolumeWriter) => Promise<void>): Promise<void> {
  const opened = await openVolume({ cipherDir: dirs.cipherDir, mode: 'auto', secrets: { passphrase: Buffer.from(PASSPHRASE) }, readOnly: false, journal: false });
  try {
    const { volume } = opened;
    const names = volume.names;
    const dir = volume.dir;
    // As the mount makes an entry: a long name's .name file first, then the entry.
    const entry = (plain: string): string => {
      const rel = names.toCipher(plain);
      names.beforeEntry(dir, rel);
      return rel;
    };
    await fill({
      opened,
      names,
      cipherPath: (plain) => names.toCipher(plain),
      mkdir: (plain) => dir.at(entry(plain), (e) => fs.mkdirSync(e, 0o755)),
      async writeFile(plain, data) {
        const rel = entry(plain);
        const file = await volume.create(dir.absolute(rel), plain, 0o644);
        try {
          await file.write(0, Buffer.from(data));
          await file.flush('full');
        } finally {
          await volume.release(file);
        }
      },
      async symlink(plain, target) {
        const stored = await volume.sealLink(Buffer.from(target));
        dir.at(entry(plain), (e) => fs.symlinkSync(stored, e));
      },
    });
  } finally {
    opened.dispose();
  }
}
