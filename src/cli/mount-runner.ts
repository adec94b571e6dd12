import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Daemon, Transport } from '../fuse/daemon';
import { Logger } from '../fuse/logger';
import { MountBusyError } from '../fuse/mountpoint';
import { MasterKdf } from '../keys';
import { describeRecovery, openVolume, VolumeSecrets } from '../store';
import { hardenProcess } from '../sys';

export interface MountSettings {
  cipherDir: string;
  mountpoint: string;
  foreground: boolean;
  ncrypt: boolean;
  readOnly: boolean;
  allowOther: boolean;
  debug: boolean;
  /** Daemon log file; in the foreground the log goes to stderr unless this is set. */
  logFile?: string;
  keyFile?: string;
  kdf?: MasterKdf;
  packageCacheMiB?: number;
  keyCacheEntries?: number;
  /** Unmount after this long (ms) with no file operation and nothing open. */
  idleUnmountMs?: number;
  /** false with --no-journal: in-place rewrites are not journaled (a crash can tear a package). */
  journal?: boolean;
  /** --commit: seconds between checkpoints (what closed files wrote is durable within about this long). */
  commitSeconds?: number;
  /** false with --no-password-check: no key check on sample files when there is no config. */
  passwordCheck?: boolean;
  /** Undefined: the own transport when its addon loads, else fuse-native. */
  transport?: Transport;
  writebackCache?: boolean;
}

/** Where a background daemon logs by default: one file per mount point, owner-only. */
export function defaultLogFile(mountpoint: string): string {
  const base = process.env.XDG_STATE_HOME ?? path.join(os.homedir(), '.local', 'state');
  const name = path.resolve(mountpoint).replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^_+/, '');
  return path.join(base, 'darefs', `${name || 'root'}.log`);
}

/** The file descriptor a background daemon reports readiness (or its error) on. */
const NOTIFY_FD = 3;

/**
 * Mounts in this process and serves until unmounted. `notify` reports readiness to a parent that
 * started us in the background. Resolves with the exit code once the mount is gone.
 */
export async function serveMount(s: MountSettings, secrets: VolumeSecrets, notify?: (line: string) => void): Promise<number> {
  // Keys and plaintext live in this process from here on: no core dumps, no ptrace.
  const notHardened = hardenProcess();
  const sink = openLogSink(s);
  const log = new Logger(sink, s.debug);
  if (notHardened !== undefined) log.problem(`cannot harden the daemon process (${notHardened})`);
  const opened = await openVolume({
    cipherDir: s.cipherDir,
    mode: s.ncrypt ? 'ncrypt' : 'auto',
    secrets,
    readOnly: s.readOnly,
    kdf: s.kdf,
    packageCacheBytes: s.packageCacheMiB === undefined ? undefined : s.packageCacheMiB * 1024 * 1024,
    maxKeys: s.keyCacheEntries,
    journal: s.journal,
    commitInterval: s.commitSeconds === undefined ? undefined : s.commitSeconds * 1000,
    onCheckpointError: (err) => log.problem(`checkpoint failed (the journal keeps its records for the next mount's replay): ${err instanceof Error ? err.message : String(err)}`),
    passwordCheck: s.passwordCheck,
  });
  secrets.passphrase?.fill(0);
  secrets.keyFile?.fill(0);
  // The journal was replayed before anything is served; say so once.
  for (const line of describeRecovery(opened.recovery)) {
    if (line.problem) log.problem(line.text);
    else log.info(line.text);
  }
  if (opened.volume.journalProblem !== undefined) {
    log.problem(`no journal (cannot write ${opened.volume.journalProblem}): a crash during a write can leave a package unreadable`);
  }
  // Signals are taken from before the mount exists: one that arrived while mounting (a supervisor
  // stopping us right away) unmounts as soon as the mount is up, instead of killing the process
  // with a live mount left behind.
  let daemon: Daemon | undefined;
  let requested: string | undefined;
  let stopping = false;
  const stop = (signal: string): void => {
    if (daemon === undefined) {
      requested ??= signal;
      return;
    }
    if (stopping) return;
    stopping = true;
    const d = daemon;
    log.info(`${signal}: unmounting ${d.mountpoint}`);
    d.stop(false).catch(async (err: unknown) => {
      const why = err instanceof MountBusyError ? err.message : String(err instanceof Error ? err.message : err);
      log.problem(`${why}; detaching lazily: the files still open keep being served until closed`);
      await d.stop(true).catch((e: unknown) => log.problem(`lazy unmount failed: ${String(e)}`));
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => stop('SIGHUP'));
  try {
    daemon = await Daemon.start({
      cipherDir: s.cipherDir,
      mountpoint: s.mountpoint,
      opened,
      log,
      allowOther: s.allowOther,
      debug: s.debug,
      readOnly: s.readOnly,
      idleUnmountMs: s.idleUnmountMs,
      transport: s.transport,
      writebackCache: s.writebackCache,
    });
  } catch (err) {
    opened.dispose();
    throw err;
  }
  log.info(`mounted ${s.cipherDir} on ${daemon.mountpoint} (${opened.mode} mode${opened.volume.names.encrypted ? ', encrypted names' : ''}${s.readOnly ? ', read-only' : ''})`);
  notify?.('ready');
  if (requested !== undefined) stop(requested);
  const reason = await daemon.closed;
  const c = opened.volume.counters;
  log.info(
    `unmounted ${daemon.mountpoint}${reason === 'external' ? ' (from outside)' : ''}; ` +
      `keys derived ${opened.keys.stats.derivations}, packages decrypted ${c.packagesOpened}, ` +
      `sealed ${c.packagesSealed}, streams rewritten ${c.rewrites}, authentication failures ${c.authFailures}`,
  );
  return 0;
}

function openLogSink(s: MountSettings): (line: string) => void {
  if (s.foreground && !s.logFile) return (line) => process.stderr.write(line + '\n');
  const file = s.logFile ?? defaultLogFile(s.mountpoint);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const fd = fs.openSync(file, 'a', 0o600);
  return (line) => {
    try {
      fs.writeSync(fd, line + '\n');
    } catch {
      // A full disk must not take the mount down with it.
    }
  };
}

/** Child side of a background mount: read the secret from stdin, report on the notify fd. */
export async function serveMountInBackground(s: MountSettings, readSecret: () => Promise<VolumeSecrets>): Promise<number> {
  const notify = (line: string): void => {
    try {
      fs.writeSync(NOTIFY_FD, line + '\n');
      if (line === 'ready' || line.startsWith('error')) fs.closeSync(NOTIFY_FD);
    } catch {
      // The parent is gone (killed); keep serving.
    }
  };
  try {
    const secrets = await readSecret();
    return await serveMount(s, secrets, notify);
  } catch (err) {
    notify(`error ${JSON.stringify({ name: err instanceof Error ? err.constructor.name : 'Error', message: err instanceof Error ? err.message : String(err), code: (err as { code?: unknown }).code })}`);
    throw err;
  }
}

export interface BackgroundError {
  name: string;
  message: string;
  code?: string;
}

/**
 * Parent side: starts `argv` (this CLI with --foreground and a hidden child flag) detached,
 * hands it the secret on a pipe (never argv or the environment), and waits until it says the
 * mount answers or why it failed.
 */
export function spawnBackgroundMount(argv: string[], secret: Buffer | undefined, logFile: string): Promise<{ ok: true } | { ok: false; error: BackgroundError }> {
  fs.mkdirSync(path.dirname(logFile), { recursive: true, mode: 0o700 });
  const logFd = fs.openSync(logFile, 'a', 0o600);
  const child = spawn(process.execPath, argv, { detached: true, stdio: ['pipe', 'ignore', logFd, 'pipe'] });
  fs.closeSync(logFd);
  child.stdin!.end(secret ?? Buffer.alloc(0));
  secret?.fill(0);
  return new Promise((resolve) => {
    let text = '';
    const pipe = child.stdio[NOTIFY_FD] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (chunk: string) => {
      text += chunk;
    });
    const finish = (): void => {
      const line = text.split('\n')[0] ?? '';
      if (line === 'ready') {
        child.unref();
        (pipe as unknown as { destroy(): void }).destroy();
        resolve({ ok: true });
      } else if (line.startsWith('error ')) {
        resolve({ ok: false, error: JSON.parse(line.slice(6)) as BackgroundError });
      } else {
        resolve({ ok: false, error: { name: 'Error', message: `the daemon exited before the mount was ready; see ${logFile}` } });
      }
    };
    pipe.on('end', finish);
    child.on('error', (err) => resolve({ ok: false, error: { name: 'Error', message: err.message } }));
  });
}

