import * as crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Cipher, Version, encryptStream } from '../../src/dare';
import { DaemonSpec, MountDirs } from './mount';
import { VECTOR_PASSWORD, ncryptKey } from './keys-for-tests';
import { mulberry32 } from './vectors';

/** The compiled CLI, as `npm ci` builds it. */
export const CLI = path.resolve(__dirname, '..', '..', 'src', 'cli', 'main.js');

export function passfile(dirs: MountDirs): string {
  return path.join(dirs.root, 'pass.txt');
}

export function logfile(dirs: MountDirs): string {
  return path.join(dirs.root, 'daemon.log');
}

/** `darefs mount -f` over the test dirs, password from a file (never argv). */
export function darefsMount(extra: string[] = [], env?: NodeJS.ProcessEnv): (dirs: MountDirs) => DaemonSpec {
  return (dirs) => ({
    command: process.execPath,
    args: [CLI, 'mount', '-f', '--passfile', passfile(dirs), ...extra, dirs.cipherDir, dirs.mountpoint],
    env: env && { ...process.env, ...env },
  });
}

export async function writePassfile(dirs: MountDirs, password = VECTOR_PASSWORD): Promise<void> {
  await fsp.writeFile(passfile(dirs), password + '\n', { mode: 0o600 });
}

/** Writes an ncrypt-mode cipher file of `plain`, as sio's `ncrypt` would. */
export async function writeNcryptFile(file: string, plain: Buffer, version = Version.V20, cipher = Cipher.AES_256_GCM, password = VECTOR_PASSWORD): Promise<void> {
  const prefix = crypto.randomBytes(32);
  const key = await ncryptKey(password, prefix);
  const parts: Buffer[] = [prefix];
  for await (const pkg of encryptStream([plain], key, { version, cipher })) parts.push(pkg);
  await fsp.writeFile(file, Buffer.concat(parts));
}

/** A seeded PRNG in [0, 1): tests print the seed so a failure can be replayed. */
export function prng(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** The background daemons `darefs mount` started for a mount point (not our children): found by command line. */
export async function daemonPids(mountpoint: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await fsp.readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('--daemon-child') && cmd.split('\0').includes(mountpoint)) pids.push(Number(name));
  }
  return pids;
}
