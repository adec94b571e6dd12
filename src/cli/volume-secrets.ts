// What unlocks a cipher directory, asked for before any work starts: shared by
// the commands that open a whole volume (mount, import, export). Moved here
// from commands/mount.ts so that they check the same option combinations and
// ask for the same secret the same way.

import * as fs from 'node:fs';
import { ConfigError, configPath, readConfig, readKeyFile } from '../keys';
import type { VolumeSecrets } from '../store';
import { UsageError } from './errors';
import { getPassword, getVolumeSecret } from './secrets';

export interface VolumeSecretRequest {
  cipherDir: string;
  /** --ncrypt: a plain directory of sio ncrypt files, unlocked by the password. */
  ncrypt: boolean;
  keyfile?: string;
  passfile?: string;
  extpass?: string;
  /** Command name for messages and usage errors. */
  command: string;
}

/** Rejects contradictory secret options; synchronous, before anything is read or asked. */
export function checkVolumeSecretOptions(o: Omit<VolumeSecretRequest, 'cipherDir'>): void {
  if (o.ncrypt && o.keyfile !== undefined) throw new UsageError('--ncrypt uses a password only: drop --keyfile', o.command);
  if (o.keyfile !== undefined && (o.passfile !== undefined || o.extpass !== undefined)) {
    throw new UsageError('--keyfile needs no password: drop --passfile/--extpass', o.command);
  }
}

/**
 * Asks for what unlocks the cipher directory: the volume's passphrase or key file when it has a
 * config (master mode), a key file alone, or the ncrypt password with --ncrypt. A directory that
 * does not exist, or has no config without --ncrypt/--keyfile, is a ConfigError (exit 7). The
 * caller zeroes the returned buffers (openVolume does not).
 */
export async function collectVolumeSecrets(o: VolumeSecretRequest): Promise<VolumeSecrets> {
  const st = await fs.promises.stat(o.cipherDir).catch(() => undefined);
  if (!st?.isDirectory()) {
    throw new ConfigError(configPath(o.cipherDir), `cipher directory ${o.cipherDir} does not exist or is not a directory`);
  }
  const config = o.ncrypt ? null : await readConfig(o.cipherDir);
  if (config) return getVolumeSecret(config, o.cipherDir, { keyfile: o.keyfile, passfile: o.passfile, extpass: o.extpass, command: o.command });
  if (o.keyfile !== undefined) return { keyFile: await readKeyFile(o.keyfile) };
  if (!o.ncrypt) {
    throw new ConfigError(
      configPath(o.cipherDir),
      `${o.cipherDir} is not a darefs volume (no ${configPath(o.cipherDir)}): run 'darefs init ${o.cipherDir}' first, or pass --ncrypt for a directory of sio ncrypt files`,
    );
  }
  return { passphrase: await getPassword({ passfile: o.passfile, extpass: o.extpass, command: o.command }) };
}

/** Zeroes what collectVolumeSecrets returned. */
export function wipeVolumeSecrets(s: VolumeSecrets): void {
  s.passphrase?.fill(0);
  s.keyFile?.fill(0);
}
