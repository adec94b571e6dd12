/**
 * Integration harness for FUSE tests. The daemon always runs as a CHILD process: a hung FUSE op
 * inside the ava worker would hang the worker for good, while a child can be SIGKILLed (which
 * aborts the FUSE connection and unblocks every waiter). Every wait has a deadline, and teardown
 * (finally + t.teardown, idempotent) always ends with no mount and no temp dir left.
 *
 *   await withMount(t, (dirs) => ({ command: process.execPath, args: [daemonJs, dirs.mountpoint] }),
 *     async (m) => { ...m.mountpoint... });
 *
 * Test files should also add `test.after.always(cleanupLeftovers)` and assert
 * `assertNoFuseMountsLeft()` in a final serial test.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { threadId } from 'node:worker_threads';
import type { ExecutionContext } from 'ava';
import { findMount, mountsUnder, probePath, type MountEntry } from '../../src/fuse/mountpoint';

/** Root of every temp dir the FUSE tests create: a leftover under it is ours. */
export const DAREFS_TEST_TMP = path.join(os.tmpdir(), 'darefs-test');

/** This worker's prefix under DAREFS_TEST_TMP (ava runs test files concurrently). */
export const WORKER_SCOPE = path.join(DAREFS_TEST_TMP, `w${process.pid}-${threadId}-`);

export interface MountDirs {
  /** Per-test temp dir (removed at teardown). */
  root: string;
  /** Empty dir for the daemon's backing store. */
  cipherDir: string;
  /** Empty mount point. */
  mountpoint: string;
}

export interface DaemonSpec {
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Written to the daemon's stdin, which is then closed (e.g. a password line). */
  stdin?: string | Buffer;
  cwd?: string;
}

export type DaemonSpecFactory = (dirs: MountDirs) => DaemonSpec;

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonHandle {
  child: ChildProcess;
  pid: number;
  /** stdout+stderr so far, interleaved as received. */
  output(): string;
  exited: Promise<ExitInfo>;
  /** Set once it has exited. */
  exit: ExitInfo | undefined;
}

export interface MountHarnessOptions {
  /** Fill the cipher dir etc. before the daemon starts. */
  setup?: (dirs: MountDirs) => Promise<void>;
  /** Wait this long for the mount to answer (ms). Default 20 000. */
  readyTimeoutMs?: number;
  /** Wait this long for a SIGTERMed daemon to exit before SIGKILL (ms). Default 10 000. */
  stopTimeoutMs?: number;
  /** Require this mount type (e.g. 'fuse.darefs'); default: any fuse type. */
  fsType?: string;
}

export interface MountContext extends MountDirs {
  /** The current daemon (replaced by respawn()). */
  readonly daemon: DaemonHandle;
  readonly entry: MountEntry;
  output(): string;
  /** SIGTERM and wait for the exit (teardown then has nothing left to do but check). */
  stop(): Promise<ExitInfo>;
  /** SIGKILL and wait for the exit: leaves a stale mount. */
  kill9(): Promise<ExitInfo>;
  /** Start a fresh daemon with the same spec and dirs and wait for its mount. */
  respawn(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// small utilities

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function timeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function run(file: string, args: string[], timeoutMs: number): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      resolve({ ok: !err, output: `${String(stdout)}${String(stderr)}`.trim() });
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// building blocks (usable on their own, e.g. to test a daemon that must refuse to mount)

export async function makeTestDirs(): Promise<MountDirs> {
  await fsp.mkdir(DAREFS_TEST_TMP, { recursive: true });
  const root = await fsp.mkdtemp(WORKER_SCOPE);
  const dirs = { root, cipherDir: path.join(root, 'cipher'), mountpoint: path.join(root, 'mnt') };
  await fsp.mkdir(dirs.cipherDir);
  await fsp.mkdir(dirs.mountpoint);
  return dirs;
}

export function spawnDaemon(spec: DaemonSpec): DaemonHandle {
  const child = spawn(spec.command, spec.args, {
    cwd: spec.cwd ?? os.tmpdir(),
    env: spec.env ?? process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const chunks: string[] = [];
  let total = 0;
  const collect = (data: Buffer): void => {
    // Keep memory bounded if a daemon runs with --debug.
    if (total > 4 << 20) return;
    total += data.length;
    chunks.push(data.toString('utf8'));
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  child.stdin?.on('error', () => undefined); // daemon may exit before reading it
  if (spec.stdin !== undefined) child.stdin?.end(spec.stdin);
  else child.stdin?.end();

  const handle: DaemonHandle = {
    child,
    pid: child.pid ?? -1,
    output: () => chunks.join(''),
    exit: undefined,
    exited: new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => {
        handle.exit = { code, signal };
        resolve(handle.exit);
      });
      child.once('error', (err) => {
        chunks.push(`spawn error: ${err.message}\n`);
        handle.exit = { code: -1, signal: null };
        resolve(handle.exit);
      });
    }),
  };
  return handle;
}

/**
 * Wait until `mountpoint` is a FUSE mount in /proc/self/mountinfo and a stat through it
 * succeeds (in a child process, with the remaining deadline). Fails early if the daemon exits.
 */
export async function waitForMount(
  daemon: DaemonHandle,
  mountpoint: string,
  opts: { timeoutMs?: number; fsType?: string } = {},
): Promise<MountEntry> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let last = 'not in mountinfo';
  while (Date.now() < deadline) {
    if (daemon.exit) {
      throw new Error(`daemon exited (${describeExit(daemon.exit)}) before mounting ${mountpoint}\n${daemon.output()}`);
    }
    const entry = await findMount(mountpoint);
    if (entry && (opts.fsType ? entry.fsType === opts.fsType : entry.fsType.startsWith('fuse'))) {
      const probe = await probePath(mountpoint, Math.max(100, deadline - Date.now()));
      // The entry must still be the top mount after the probe: a stale mount being cleaned up
      // meanwhile would leave the probe answering from the bare directory underneath.
      if (probe.state === 'ok' && (await findMount(mountpoint))?.id === entry.id) return entry;
      last = `mounted (${entry.fsType}) but stat says ${probe.state}`;
    } else if (entry) {
      last = `mount type is ${entry.fsType}`;
    }
    await sleep(25);
  }
  throw new Error(`mount at ${mountpoint} not ready in time: ${last}\n${daemon.output()}`);
}

function describeExit(e: ExitInfo): string {
  return e.signal ? `signal ${e.signal}` : `code ${String(e.code)}`;
}

/** SIGKILL a daemon (if alive) and lazily detach whatever is still mounted at `mnt`. */
export async function killAndLazyUnmount(pid: number, mnt: string, waitMs = 5000): Promise<void> {
  if (pid > 0 && isAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    const deadline = Date.now() + waitMs;
    while (isAlive(pid) && Date.now() < deadline) await sleep(20);
  }
  await lazyUnmountAll(mnt);
}

/** `umount -l` every mount at or below `dir`, deepest first. */
async function lazyUnmountAll(dir: string): Promise<string[]> {
  const problems: string[] = [];
  const entries = (await mountsUnder(dir)).sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  for (const e of entries) {
    const res = await run('umount', ['-l', e.mountPoint], 10_000);
    if (!res.ok && (await findMount(e.mountPoint))?.id === e.id) problems.push(`umount -l ${e.mountPoint}: ${res.output}`);
  }
  return problems;
}

/**
 * Stop a daemon: SIGTERM, wait up to `stopTimeoutMs`, then SIGKILL; finally `umount -l` if the
 * mount is still there. Reports what had to be forced.
 */
export async function stopDaemon(
  daemon: DaemonHandle,
  mountpoint: string,
  stopTimeoutMs = 10_000,
): Promise<{ exit: ExitInfo | undefined; killed: boolean; lazyUnmounted: boolean }> {
  let killed = false;
  if (!daemon.exit) {
    daemon.child.kill('SIGTERM');
    if ((await timeout(daemon.exited, stopTimeoutMs)) === 'timeout') {
      killed = true;
      daemon.child.kill('SIGKILL');
      await timeout(daemon.exited, 5000);
    }
  }
  let lazyUnmounted = false;
  if (await findMount(mountpoint)) {
    lazyUnmounted = true;
    await killAndLazyUnmount(daemon.pid, mountpoint);
  }
  return { exit: daemon.exit, killed, lazyUnmounted };
}

/** Throws if any mount is left under `scope` (default: this worker's temp dirs). */
export async function assertNoFuseMountsLeft(scope: string = WORKER_SCOPE): Promise<void> {
  const left = await leftoverMounts(scope);
  if (left.length) {
    throw new Error(`mounts left behind: ${left.map((e) => `${e.mountPoint} (${e.fsType})`).join(', ')}`);
  }
}

async function leftoverMounts(scope: string): Promise<MountEntry[]> {
  // WORKER_SCOPE is a name prefix, not a directory: filter on the string.
  const all = await mountsUnder(DAREFS_TEST_TMP);
  return all.filter((e) => e.mountPoint.startsWith(scope));
}

/** For test.after.always: lazily detach anything this worker left, remove its temp dirs. */
export async function cleanupLeftovers(scope: string = WORKER_SCOPE): Promise<void> {
  for (const e of await leftoverMounts(scope)) await run('umount', ['-l', e.mountPoint], 10_000);
  if ((await leftoverMounts(scope)).length) return; // never rm through a mount
  const parent = path.dirname(scope);
  const prefix = path.basename(scope);
  const names = await fsp.readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    if (name.startsWith(prefix)) await fsp.rm(path.join(parent, name), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// the harness

/**
 * Make temp dirs, spawn the daemon, wait for the mount, run `fn`, always tear down: SIGTERM,
 * deadline, SIGKILL + umount -l, then remove the temp dirs (only if nothing is mounted there).
 * Teardown fails the test if it had to force anything or a mount stayed behind; the daemon's
 * output is attached with t.log when anything failed.
 */
export async function withMount<T>(
  t: ExecutionContext,
  specFor: DaemonSpecFactory,
  fn: (m: MountContext) => Promise<T>,
  opts: MountHarnessOptions = {},
): Promise<T> {
  const dirs = await makeTestDirs();
  let daemon: DaemonHandle | undefined;
  const outputs: string[] = [];
  let failed = false;
  // Set by kill9(): a stale mount after that is the test's intent, not a daemon bug.
  let killedOnPurpose = false;

  let torn: Promise<void> | undefined;
  const teardown = (): Promise<void> => (torn ??= doTeardown());
  t.teardown(teardown);

  async function doTeardown(): Promise<void> {
    const problems: string[] = [];
    if (daemon) {
      const wasRunning = !daemon.exit;
      const res = await stopDaemon(daemon, dirs.mountpoint, opts.stopTimeoutMs ?? 10_000);
      outputs.push(daemon.output());
      if (res.killed) problems.push(`daemon ignored SIGTERM for ${(opts.stopTimeoutMs ?? 10_000) / 1000} s (SIGKILLed)`);
      else if (res.lazyUnmounted && (wasRunning || !killedOnPurpose)) {
        problems.push(`daemon exited (${res.exit ? describeExit(res.exit) : '?'}) but left its mount (umount -l needed)`);
      }
    }
    problems.push(...(await lazyUnmountAll(dirs.root)));
    if ((await mountsUnder(dirs.root)).length === 0) {
      await fsp.rm(dirs.root, { recursive: true, force: true });
    } else {
      problems.push(`mount still present under ${dirs.root}; temp dir kept`);
    }
    if (failed || problems.length) {
      try {
        t.log(`daemon output:\n${outputs.join('\n--- respawn ---\n')}`);
      } catch {
        // t.log is not allowed once the test has finished
      }
    }
    if (problems.length) throw new Error(problems.join('; '));
  }

  const start = async (): Promise<MountEntry> => {
    daemon = spawnDaemon(specFor(dirs));
    return waitForMount(daemon, dirs.mountpoint, { timeoutMs: opts.readyTimeoutMs, fsType: opts.fsType });
  };

  try {
    if (opts.setup) await opts.setup(dirs);
    let entry = await start();
    const ctx: MountContext = {
      ...dirs,
      get daemon(): DaemonHandle {
        return daemon!;
      },
      get entry(): MountEntry {
        return entry;
      },
      output: () => daemon?.output() ?? '',
      stop: async () => {
        const d = daemon!;
        d.child.kill('SIGTERM');
        const res = await timeout(d.exited, opts.stopTimeoutMs ?? 10_000);
        if (res === 'timeout') throw new Error(`daemon ${d.pid} ignored SIGTERM\n${d.output()}`);
        return res;
      },
      kill9: async () => {
        const d = daemon!;
        killedOnPurpose = true;
        d.child.kill('SIGKILL');
        const res = await timeout(d.exited, 5000);
        if (res === 'timeout') throw new Error(`daemon ${d.pid} survived SIGKILL`);
        return res;
      },
      respawn: async () => {
        if (daemon && !daemon.exit) throw new Error('respawn: the previous daemon is still running');
        if (daemon) outputs.push(daemon.output());
        killedOnPurpose = false;
        entry = await start();
      },
    };
    return await fn(ctx);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    try {
      await teardown();
    } catch (err) {
      // Keep the test's own error; still show why teardown complained.
      if (!failed) throw err;
      try {
        t.log(`teardown: ${err instanceof Error ? err.message : String(err)}`);
      } catch {
        // test already finished (timeout)
      }
    }
  }
}
