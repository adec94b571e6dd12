/**
 * Drives a command through a pseudo-terminal, like a user at a keyboard: waits for each
 * expected text (a prompt), then types. Uses python3's `pty` module (pty.fork makes the
 * terminal the child's controlling terminal, so /dev/tty works); without python3, util-linux
 * `script -qec CMD /dev/null`, fed through a pipe.
 */
import { spawn, spawnSync } from 'node:child_process';
import { childEnv } from './cli';

export interface PtyStep {
  /** Text to wait for in the terminal output (after the previous step's match). */
  expect: string;
  /** What to type once it appeared ("\r" is Enter, "\x03" Ctrl-C, "\x7f" Backspace). */
  send: string;
}

export interface PtyResult {
  code: number | null;
  /** Everything the terminal showed (what the program wrote and what the terminal echoed). */
  transcript: string;
  driver: 'python3' | 'script';
}

const PYTHON_DRIVER = String.raw`
import json, os, pty, select, sys, time, base64
cfg = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    try:
        os.execvpe(cfg["argv"][0], cfg["argv"], cfg["env"])
    finally:
        os._exit(127)
out = b""
deadline = time.time() + cfg["timeout"]
def pump(until=None):
    global out
    while time.time() < deadline:
        if until is not None and until():
            return True
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                b = os.read(fd, 4096)
            except OSError:
                return until is None
            if not b:
                return until is None
            out += b
    return False
pos = 0
ok = True
for step in cfg["steps"]:
    want = step["expect"].encode()
    if not pump(lambda: out.find(want, pos) >= 0):
        ok = False
        break
    pos = out.find(want, pos) + len(want)
    time.sleep(0.05)
    os.write(fd, step["send"].encode())
if ok:
    pump()
else:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
print(json.dumps({"code": code, "ok": ok, "transcript": base64.b64encode(out).decode()}))
`;

let cached: 'python3' | 'script' | null | undefined;

/** Which pseudo-terminal driver works here, or null. */
export function ptyDriver(): 'python3' | 'script' | null {
  if (cached !== undefined) return cached;
  const py = spawnSync('python3', ['-c', 'import pty, os; print(hasattr(os, "waitstatus_to_exitcode"))'], { encoding: 'utf8' });
  if (py.status === 0 && py.stdout.trim() === 'True') cached = 'python3';
  else if (spawnSync('script', ['-qec', 'true', '/dev/null'], { stdio: 'ignore' }).status === 0) cached = 'script';
  else cached = null;
  return cached;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function runInPty(
  argv: readonly string[],
  steps: readonly PtyStep[],
  opts: { env?: Record<string, string | undefined>; timeoutMs?: number; driver?: 'python3' | 'script' } = {},
): Promise<PtyResult> {
  const driver = opts.driver ?? ptyDriver();
  if (driver === null) return Promise.reject(new Error('no pseudo-terminal driver: neither python3 (pty) nor script(1) works'));
  const env = childEnv(opts.env);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  if (driver === 'python3') {
    return new Promise((resolve, reject) => {
      const cfg = JSON.stringify({ argv, env, steps, timeout: timeoutMs / 1000 });
      const child = spawn('python3', ['-c', PYTHON_DRIVER, cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 5000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code !== 0) return reject(new Error(`pty driver failed (${code}): ${Buffer.concat(err).toString()}`));
        const r = JSON.parse(Buffer.concat(out).toString()) as { code: number; ok: boolean; transcript: string };
        const transcript = Buffer.from(r.transcript, 'base64').toString('utf8');
        if (!r.ok) return reject(new Error(`expected text never appeared; terminal showed: ${JSON.stringify(transcript)}`));
        resolve({ code: r.code, transcript, driver });
      });
    });
  }
  // script(1): its stdin (a pipe) is copied to the terminal; wait for each prompt before typing.
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', argv.map(shellQuote).join(' '), '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let transcript = '';
    let pos = 0;
    let step = 0;
    const advance = (): void => {
      while (step < steps.length) {
        const at = transcript.indexOf(steps[step].expect, pos);
        if (at < 0) return;
        pos = at + steps[step].expect.length;
        const send = steps[step].send;
        step++;
        setTimeout(() => child.stdin.write(send), 50);
      }
    };
    child.stdout.on('data', (b: Buffer) => {
      transcript += b.toString('utf8');
      advance();
    });
    child.stdin.on('error', () => undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (step < steps.length) return reject(new Error(`expected text never appeared; terminal showed: ${JSON.stringify(transcript)}`));
      resolve({ code, transcript, driver: 'script' });
    });
  });
}
