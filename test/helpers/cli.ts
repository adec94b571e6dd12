/**
 * Runs the built CLI (dist/src/cli/main.js) as a child process, the way a user does, with a
 * timeout; and temporary directories removed at teardown.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';

/** dist/test/helpers/cli.js -> dist/src/cli/main.js */
export const MAIN = path.resolve(__dirname, '..', '..', 'src', 'cli', 'main.js');

export const PASSWORD = 'correct horse battery staple';
export const MASTER_KEY_HEX = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export interface CliOptions {
  /** Bytes for standard input (closed right after); none: an empty, closed stdin. */
  input?: Buffer | string;
  /** Or a file to use as standard input. */
  stdinFile?: string;
  /** Variables added to the environment (undefined removes one). DAREFS_PASSWORD is not inherited. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  timeoutMs?: number;
}

/** The environment of a child: ours without the darefs variables, plus `extra`. */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DAREFS_PASSWORD;
  delete env.DAREFS_DEBUG;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export function runCli(args: readonly string[], opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const stdinFd = opts.stdinFile !== undefined ? fs.openSync(opts.stdinFile, 'r') : undefined;
    const child = spawn(process.execPath, [MAIN, ...args], {
      cwd: opts.cwd,
      env: childEnv(opts.env),
      stdio: [stdinFd ?? 'pipe', 'pipe', 'pipe'],
    });
    if (stdinFd !== undefined) fs.closeSync(stdinFd);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    if (child.stdin !== null) {
      child.stdin.on('error', () => undefined); // the CLI may exit before reading all of it
      child.stdin.end(opts.input ?? '');
    }
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`darefs ${args.join(' ')}: no exit after ${timeoutMs} ms; stderr so far: ${Buffer.concat(err).toString()}`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

/** A fresh directory under os.tmpdir(), removed when the test ends. */
export function tempDir(t: ExecutionContext, prefix = 'darefs-cli-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes `content` to `dir/name` and returns the path. */
export function writeFile(dir: string, name: string, content: Buffer | string, mode = 0o600): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, content, { mode });
  return file;
}

/** Reproducible pseudo-random bytes, cheap to make (not for keys). */
export function testBytes(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
