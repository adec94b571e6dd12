// `darefs mount CIPHERDIR MOUNTPOINT`: serves the plaintext view. In the background by default:
// the launcher asks for the secret, starts the daemon detached, hands it the secret on a pipe
// and returns once the mount answers (exit 0) or with the daemon's reason for failing.

import * as path from 'node:path';
import { Transport } from '../../fuse/daemon';
import { MasterKdf } from '../../keys';
import { VolumeSecrets } from '../../store';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { CliError, UsageError } from '../errors';
import { ExitCode } from '../exit-codes';
import { defaultLogFile, MountSettings, serveMount, serveMountInBackground, spawnBackgroundMount } from '../mount-runner';
import { KEYFILE_OPTION, PASSWORD_OPTIONS } from '../secrets';
import { checkVolumeSecretOptions, collectVolumeSecrets } from '../volume-secrets';

const OPTIONS = defineOptions([
  { name: 'foreground', short: 'f', help: 'stay in the foreground, log to stderr; Ctrl-C or SIGTERM unmounts' },
  ...PASSWORD_OPTIONS,
  KEYFILE_OPTION,
  { name: 'ncrypt', help: 'CIPHERDIR is a plain directory of sio ncrypt files (no .darefs/): mount with the password' },
  { name: 'kdf', value: 'KDF', choices: ['hmac-sha256', 'hkdf-sha256'], help: 'with --keyfile and no volume config: hmac-sha256 (default) or hkdf-sha256' },
  { name: 'read-only', short: 'r', help: 'mount read-only: every change fails with EROFS' },
  { name: 'allow-other', help: 'let other users use the mount (needs user_allow_other in /etc/fuse.conf for non-root)' },
  { name: 'debug', help: 'log every FUSE operation' },
  { name: 'log', value: 'FILE', help: 'daemon log file (background default: ~/.local/state/darefs/MOUNTPOINT.log)' },
  { name: 'package-cache', value: 'MIB', help: 'cache of decrypted packages in MiB (default 16)' },
  { name: 'key-cache', value: 'N', help: 'number of per-file keys kept (default 4096)' },
  { name: 'idle-unmount', value: 'DURATION', help: 'unmount after DURATION (e.g. 90s, 10m, 2h) with no file operation and no open file' },
  {
    name: 'commit',
    value: 'SECONDS',
    help:
      'what closed files wrote is durable within SECONDS (default 5, like ext4\'s commit=); fsync is always durable at once; ' +
      '0: only at fsync, unmount, or when the journal is full',
  },
  { name: 'no-journal', help: 'do not journal in-place rewrites: faster, but a crash during a write can leave a package unreadable' },
  {
    name: 'no-password-check',
    help:
      'without a volume config (--ncrypt, --keyfile alone): mount even when no file in CIPHERDIR can check the password ' +
      '(none has a well-formed DARE package); a wrong password then mounts, and new files are sealed under it',
  },
  {
    name: 'transport',
    value: 'NAME',
    choices: ['kernel', 'fuse-native'],
    help:
      "how FUSE requests are served: 'kernel' (default: darefs reads /dev/fuse itself) or 'fuse-native' (libfuse 2, the " +
      'transport darefs started on; the fallback when native/darefs_fuse was not built). Default from DAREFS_TRANSPORT',
  },
  { name: 'writeback-cache', help: "with --transport kernel: the kernel caches writes and sends them in the background (faster small writes; a full disk shows at close or fsync, not at write)" },
  { name: 'daemon-child', help: 'internal: the background daemon reads its secret from stdin' },
] as const);

type Options = ReturnType<typeof parseArgs<typeof OPTIONS>>['options'];

export const mountCommand: Command = {
  name: 'mount',
  summary: 'mount the plaintext view of CIPHERDIR on MOUNTPOINT',
  usage: ['mount [options] CIPHERDIR MOUNTPOINT'],
  description:
    'Returns once the mount answers; the daemon keeps running in the background (use -f to stay in the foreground). ' +
    'A wrong password is refused before anything is mounted; without a volume config it is tried on a few files of ' +
    'CIPHERDIR whose DARE header is well formed, and a CIPHERDIR whose files are all unusable for that is refused ' +
    '(--no-password-check overrides). MOUNTPOINT must be an empty directory; a stale mount ' +
    "left by a killed daemon is cleaned up first. Unmount with 'darefs umount MOUNTPOINT'.",
  options: OPTIONS,
  examples: ['darefs mount ~/cipher ~/plain', 'darefs mount -f --passfile ~/.pw ~/cipher ~/plain', 'darefs mount --ncrypt ~/ncrypt-files ~/plain', 'darefs mount --read-only --keyfile master.key ~/cipher ~/plain'],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'mount');
    expectPositionals(positionals, 2, 2, 'CIPHERDIR MOUNTPOINT', 'mount');
    const settings = toSettings(o, positionals[0], positionals[1]);
    if (o['daemon-child']) {
      return serveMountInBackground(settings, readSecretFromStdin);
    }
    const secrets = await collectSecrets(settings, o);
    if (o.foreground) return serveMount(settings, secrets);

    const logFile = settings.logFile ?? defaultLogFile(settings.mountpoint);
    const childArgs = [process.argv[1], 'mount', '--daemon-child', ...(settings.logFile ? [] : ['--log', logFile]), ...args];
    const res = await spawnBackgroundMount(childArgs, encodeSecrets(secrets), logFile);
    if (res.ok) {
      process.stderr.write(`darefs: mounted ${settings.cipherDir} on ${settings.mountpoint} (log: ${logFile})\n`);
      return ExitCode.OK;
    }
    throw new CliError(res.error.message, exitCodeForName(res.error.name));
  },
};

function toSettings(o: Options, cipherDir: string, mountpoint: string): MountSettings {
  checkVolumeSecretOptions({ ncrypt: o.ncrypt, keyfile: o.keyfile, passfile: o.passfile, extpass: o.extpass, command: 'mount' });
  return {
    cipherDir: path.resolve(cipherDir),
    mountpoint: path.resolve(mountpoint),
    foreground: o.foreground,
    ncrypt: o.ncrypt,
    readOnly: o['read-only'],
    allowOther: o['allow-other'],
    debug: o.debug,
    logFile: o.log === undefined ? undefined : path.resolve(o.log),
    keyFile: o.keyfile,
    kdf: o.kdf as MasterKdf | undefined,
    packageCacheMiB: positiveNumber(o['package-cache'], '--package-cache'),
    keyCacheEntries: positiveNumber(o['key-cache'], '--key-cache'),
    idleUnmountMs: duration(o['idle-unmount']),
    journal: !o['no-journal'],
    commitSeconds: positiveNumber(o.commit, '--commit'),
    passwordCheck: !o['no-password-check'],
    transport: transportOf(o.transport ?? process.env.DAREFS_TRANSPORT),
    writebackCache: o['writeback-cache'],
  };
}

function transportOf(value: string | undefined): Transport | undefined {
  if (value === undefined || value === '') return undefined;
  if (value === 'kernel' || value === 'fuse-native') return value;
  throw new UsageError(`--transport (or DAREFS_TRANSPORT) is 'kernel' or 'fuse-native', not ${JSON.stringify(value)}`, 'mount');
}

function positiveNumber(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name} takes a number >= 0, not ${JSON.stringify(value)}`, 'mount');
  return n;
}

/** `90`, `90s`, `10m`, `2h` → milliseconds. */
export function duration(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m || Number(m[1]) <= 0) throw new UsageError(`--idle-unmount takes a duration such as 90s, 10m or 2h, not ${JSON.stringify(value)}`, 'mount');
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Number(m[1]) * unit;
}

/** Asks for what unlocks CIPHERDIR, before anything starts: the launcher owns the terminal. */
function collectSecrets(s: MountSettings, o: Options): Promise<VolumeSecrets> {
  return collectVolumeSecrets({ cipherDir: s.cipherDir, ncrypt: s.ncrypt, keyfile: o.keyfile, passfile: o.passfile, extpass: o.extpass, command: 'mount' });
}

// The secret travels to the daemon on its stdin: one tag byte, then the secret.
function encodeSecrets(s: VolumeSecrets): Buffer {
  const secret = s.keyFile ?? s.passphrase ?? Buffer.alloc(0);
  const out = Buffer.concat([Buffer.from(s.keyFile ? 'K' : 'P'), secret]);
  s.keyFile?.fill(0);
  s.passphrase?.fill(0);
  return out;
}

async function readSecretFromStdin(): Promise<VolumeSecrets> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const all = Buffer.concat(chunks);
  chunks.forEach((c) => c.fill(0));
  const secret = Buffer.from(all.subarray(1));
  const tag = all.subarray(0, 1).toString();
  all.fill(0);
  if (tag === 'K') return { keyFile: secret };
  return secret.length > 0 ? { passphrase: secret } : {};
}

function exitCodeForName(name: string): number {
  if (name === 'WrongPasswordError') return ExitCode.WRONG_KEY;
  if (name === 'ConfigError' || name === 'ConfigExistsError') return ExitCode.VOLUME;
  if (name === 'UsageError') return ExitCode.USAGE;
  return ExitCode.ERROR;
}
