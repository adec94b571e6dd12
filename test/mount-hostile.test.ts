/**
 * The cipher directory is hostile (FORMAT.md §6; issue 10 items 3 and 6): whoever else writes
 * there swaps entries while the volume is mounted. The victim mount is a root daemon with
 * --allow-other (as the README documents for fstab and systemd); `nobody` acts through it.
 *
 * The kernel checks permissions (default_permissions) against the attributes it cached for
 * entry_timeout / attr_timeout (1 s), not against what is in the cipher directory now. So the
 * attack is: nobody stats its own entry (the kernel caches "nobody's file"), the attacker swaps
 * the cipher entry for a symlink to a root-only file or directory outside the volume, and
 * nobody acts at once, within the timeout. The daemon must not follow the symlink: nothing
 * outside may be read, written, listed, created, renamed, removed or have its mode, owner, times
 * or attributes changed. After the timeout the kernel sees the symlink itself and follows it
 * with nobody's own rights, which must fail too.
 *
 * A FIFO swapped in for a cipher file the kernel cached as a regular file (item 6): opening it
 * must fail promptly with EIO while the daemon goes on serving, and SIGTERM still unmounts.
 *
 * The stat, the wait for the swap and the act run in one nobody shell (ready / go on its pipes),
 * so the act follows the stat by a few milliseconds. Hard links planted into the cipher directory
 * are out of scope (fs.protected_hardlinks).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { assertNoFuseMountsLeft, cleanupLeftovers, sleep, type MountContext } from './helpers/mount';
import { decryptCipherFile, requirePrograms, runOk, stopCleanly, volumeKeys, withMasterMount, writeFileSynced } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

const NOBODY = 65534;
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--'];
/** Longer than the mount's entry_timeout and attr_timeout (1 s, src/fuse/native.ts). */
const PAST_TIMEOUTS_MS = 1600;

/** Plaintext of root's own file, whose cipher file the attacker copies outside the volume. */
const ROOT_PLAIN = 'ROOT-ONLY PLAINTEXT: decrypting this is the leak\n';
/** A plain file of root's, 0600, outside the volume. */
const PLAIN_SECRET = 'PLAIN SECRET of root, mode 0600\n';
const NOBODY_DATA = "nobody's own data\n";

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

interface Attempt {
  /** The shell got past its stat to the swap. */
  ready: boolean;
  code: number | null;
  /** SIGKILL: it did not finish in time. */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** From the swap's start to the "go" (ms): how long the kernel's cache had been stale. */
  swapMs: number;
}

/**
 * One shell (as nobody, or root for `asRoot`) stats `warm` (the kernel caches those entries and
 * attributes), says ready, waits; then `swap` runs here, optionally `delayMs` passes, and the
 * shell runs `action`. After `timeoutMs` it is killed and the attempt settles at once as
 * SIGKILL: a process stuck on a wedged daemon may not die before the daemon does.
 */
function attack(opts: { warm: string[]; swap: () => void; action: string; delayMs?: number; asRoot?: boolean; timeoutMs?: number }): Promise<Attempt> {
  const script = `stat -- ${opts.warm.map(q).join(' ')} >/dev/null || exit 90\necho ready\nread go || exit 91\n${opts.action}\n`;
  const argv = [...(opts.asRoot ? [] : AS_NOBODY), 'sh', '-c', script];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let out = '';
    let err = '';
    let ready = false;
    let swapMs = -1;
    let settled = false;
    const settle = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ready, code, signal, stdout: out, stderr: err, swapMs });
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      settle(null, 'SIGKILL');
    }, opts.timeoutMs ?? 15_000);
    child.stdin.on('error', () => undefined);
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (ready || !out.startsWith('ready\n')) return;
      ready = true;
      out = out.slice('ready\n'.length);
      const started = Date.now();
      try {
        opts.swap();
      } catch (e) {
        child.kill('SIGKILL');
        settled = true;
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
        return;
      }
      void sleep(opts.delayMs ?? 0).then(() => {
        swapMs = Date.now() - started;
        child.stdin.end('go\n');
      });
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (!ready && !settled && code === 90) {
        settled = true;
        clearTimeout(timer);
        reject(new Error(`the shell's stat failed before the swap: ${err}`));
        return;
      }
      settle(code, signal);
    });
  });
}

/**
 * Everything about the files under `dir` that any of the attacks could change: names, type,
 * mode, owner, size, link count, mtime, ctime (every chmod, chown, xattr, link, rename and write
 * moves it) and a hash of the content. Not atime: reading is checked by what the reader got.
 */
function snapshot(dir: string): string[] {
  const lines: string[] = [];
  const walk = (p: string, rel: string): void => {
    const st = fs.lstatSync(p, { bigint: true });
    const content = st.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex').slice(0, 16) : '-';
    lines.push(`${rel} ${st.mode.toString(8)} ${st.uid}:${st.gid} size=${st.size} nlink=${st.nlink} mtime=${st.mtimeNs} ctime=${st.ctimeNs} ${content}`);
    if (st.isDirectory()) for (const name of fs.readdirSync(p).sort()) walk(path.join(p, name), path.join(rel, name));
  };
  walk(dir, '.');
  return lines;
}

/** What differs between two snapshots, one line per entry. */
function changes(before: string[], after: string[]): string[] {
  const was = new Set(before);
  const now = new Set(after);
  return [...before.filter((l) => !now.has(l)).map((l) => `outside, was: ${l}`), ...after.filter((l) => !was.has(l)).map((l) => `outside, now: ${l}`)];
}

/** Atomically replaces the cipher entry `entry` (a file) with a symlink to `target`. */
function swapFileForSymlink(entry: string, target: string): void {
  const tmp = `${entry}.swap`;
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, entry);
}

/**
 * The volume, mounted by root with --allow-other, with a directory `home` of nobody's, and the
 * cipher file of a root file (plaintext ROOT_PLAIN) to copy outside: returns that cipher file.
 */
async function prepareVolume(m: MountContext): Promise<{ home: string; cipherHome: string; rootCipher: string }> {
  await fsp.chmod(m.root, 0o755);
  await fsp.chmod(m.mountpoint, 0o755);
  const home = path.join(m.mountpoint, 'home');
  await fsp.mkdir(home, { mode: 0o755 });
  await fsp.chown(home, NOBODY, NOBODY);
  await writeFileSynced(path.join(m.mountpoint, 'root-file'), ROOT_PLAIN, 0o600);
  const rootCipher = path.join(m.cipherDir, 'root-file');
  // Copied outside, it must really be something the daemon would decrypt.
  const keys = await volumeKeys(m.cipherDir);
  if ((await decryptCipherFile(keys, rootCipher)).toString() !== ROOT_PLAIN) throw new Error('root-file does not decrypt to what was written');
  return { home, cipherHome: path.join(m.cipherDir, 'home'), rootCipher };
}

/** A root-owned 0600 file outside the volume: a copy of a cipher file, or plain text. */
function plantOutside(file: string, kind: 'cipher' | 'plain', rootCipher: string): void {
  if (kind === 'cipher') fs.copyFileSync(rootCipher, file);
  else fs.writeFileSync(file, PLAIN_SECRET);
  fs.chownSync(file, 0, 0);
  fs.chmodSync(file, 0o600);
}

// --commit 0.2: nobody's files, once closed, are in place and closed by the daemon within
// CHECKPOINTED_MS (until then the daemon keeps them open, and serves them, by their descriptor).
const MOUNT = { extra: () => ['--allow-other', '--commit', '0.2'], stopTimeoutMs: 5000 };
const CHECKPOINTED_MS = 800;

/** What nobody does to its file `$F` (swapped for a symlink to root's file). */
const FILE_ACTIONS: Record<string, string> = {
  cat: 'cat -- "$F"',
  write: 'printf PWNED >> "$F"',
  overwrite: 'printf PWNED 1<> "$F"',
  truncate: 'truncate -s 0 -- "$F"',
  chmod: 'chmod 4777 -- "$F"',
  chown: `chown ${NOBODY}:${NOBODY} -- "$F"`,
  setfattr: 'setfattr -n user.pwned -v 1 -- "$F"',
  touch: 'touch -d 2001-02-03T04:05:06 -- "$F"',
  ln: 'ln -- "$F" "$F.hardlink"',
  rename: 'mv -- "$F" "$F.moved"',
  unlink: 'rm -f -- "$F"',
};
/** Of those, what fails within the timeout (the others act on the symlink itself, in the volume). */
const FILE_ACTIONS_REFUSED = ['cat', 'write', 'overwrite', 'truncate', 'chmod'];

/** Runs every case: those within the timeout one at a time, each right after its own stat; the late ones all at once. */
async function runCases<C extends { name: string; late: boolean }>(cases: C[], attempt: (c: C) => Promise<Attempt>): Promise<Map<string, Attempt>> {
  const results = new Map<string, Attempt>();
  for (const c of cases.filter((c) => !c.late)) results.set(c.name, await attempt(c));
  const late = cases.filter((c) => c.late);
  (await Promise.all(late.map(attempt))).forEach((r, i) => results.set(late[i].name, r));
  return results;
}

/** One attempt as a problem report names it. */
function describeAttempt(name: string, r: Attempt): string {
  return `${name} (exit ${String(r.code)}${r.signal ? ` ${r.signal}` : ''}, ${r.swapMs} ms after the swap, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)})`;
}

test.serial('nobody cannot reach a root-only file outside the volume through its own file swapped for a symlink', async (t) => {
  t.timeout(150_000);
  await requirePrograms('setpriv', 'sh', 'stat', 'cat', 'truncate', 'chmod', 'chown', 'setfattr', 'touch', 'ln', 'mv', 'rm');
  await withMasterMount(
    t,
    async (m) => {
      const { home, cipherHome, rootCipher } = await prepareVolume(m);
      const outside = path.join(m.root, 'outside');
      fs.mkdirSync(outside, { mode: 0o755 });
      fs.chmodSync(outside, 0o755);

      type Case = { name: string; action: string; kind: 'cipher' | 'plain'; late: boolean };
      const cases: Case[] = [];
      for (const late of [false, true]) {
        for (const kind of ['cipher', 'plain'] as const) {
          for (const action of Object.keys(FILE_ACTIONS)) cases.push({ name: `${action}-${kind}-${late ? 'late' : 'now'}`, action, kind, late });
        }
      }
      // nobody's files, made through the mount by nobody; root's files outside, one per case.
      await runOk(AS_NOBODY[0], [...AS_NOBODY.slice(1), 'sh', '-c', 'cd "$1" && shift && for n; do printf %s "$0" > "$n"; done', NOBODY_DATA, home, ...cases.map((c) => c.name)]);
      await sleep(CHECKPOINTED_MS);
      for (const c of cases) plantOutside(path.join(outside, c.name), c.kind, rootCipher);
      const before = snapshot(outside);

      const attempt = (c: Case): Promise<Attempt> => {
        const file = path.join(home, c.name);
        return attack({
          warm: [file],
          swap: () => swapFileForSymlink(path.join(cipherHome, c.name), path.join(outside, c.name)),
          action: `F=${q(file)}\n${FILE_ACTIONS[c.action]}`,
          delayMs: c.late ? PAST_TIMEOUTS_MS : 0,
        });
      };
      const results = await runCases(cases, attempt);

      // Every case is judged, then all that went wrong is reported at once.
      const problems: string[] = [];
      for (const c of cases) {
        const r = results.get(c.name)!;
        const what = describeAttempt(c.name, r);
        if (!r.ready || r.signal !== null) problems.push(`${what}: did not finish`);
        if (r.stdout.includes('ROOT-ONLY') || r.stdout.includes('PLAIN SECRET')) problems.push(`${what}: shows root's secret`);
        if (c.action === 'cat' && r.code === 0) problems.push(`${what}: cat succeeded`);
        if (!c.late && FILE_ACTIONS_REFUSED.includes(c.action)) {
          if (r.code === 0) problems.push(`${what}: succeeded`);
          else if (c.action !== 'chmod' && !/Input\/output error/.test(r.stderr)) problems.push(`${what}: not EIO`);
        }
      }
      // Nothing outside changed: not a byte, not a mode (no setuid), owner, time or attribute.
      problems.push(...changes(before, snapshot(outside)));
      t.deepEqual(problems, []);
      t.log(`within the timeout, each act came ${Math.max(...cases.filter((c) => !c.late).map((c) => results.get(c.name)!.swapMs))} ms at most after its swap`);
      await stopCleanly(t, m);
    },
    MOUNT,
  );
});

/** What nobody does in its directory `$D` (swapped for a symlink to a root-only directory). */
const DIR_ACTIONS: Record<string, string> = {
  ls: 'ls -la -- "$D/"',
  cat: 'cat -- "$D/f"',
  write: 'printf PWNED >> "$D/f"',
  truncate: 'truncate -s 0 -- "$D/f"',
  chmod: 'chmod 4777 -- "$D/f"',
  chown: `chown ${NOBODY}:${NOBODY} -- "$D/f"`,
  setfattr: 'setfattr -n user.pwned -v 1 -- "$D/f"',
  touch: 'touch -d 2001-02-03T04:05:06 -- "$D/f"',
  ln: 'ln -- "$D/f" "$D/f.hardlink"',
  rename: 'mv -T -- "$D/f" "$D/f.moved"',
  unlink: 'rm -f -- "$D/f"',
  create: 'printf PWNED > "$D/new"',
  mkdir: 'mkdir -- "$D/newdir"',
  mkfifo: 'mkfifo -- "$D/fifo"',
  mknod: 'mknod -- "$D/node" p',
  rmdir: 'rmdir -- "$D/sub"',
};

test.serial('nobody cannot list or change a root-only directory outside the volume through its own directory swapped for a symlink', async (t) => {
  t.timeout(150_000);
  await requirePrograms('setpriv', 'sh', 'stat', 'ls', 'cat', 'truncate', 'chmod', 'chown', 'setfattr', 'touch', 'ln', 'mv', 'rm', 'mkdir', 'mkfifo', 'mknod', 'rmdir');
  await withMasterMount(
    t,
    async (m) => {
      const { home, cipherHome, rootCipher } = await prepareVolume(m);
      const outside = path.join(m.root, 'outside');
      const aside = path.join(m.root, 'aside');
      fs.mkdirSync(outside, { mode: 0o755 });
      fs.chmodSync(outside, 0o755);
      fs.mkdirSync(aside);

      type Case = { name: string; action: string; late: boolean };
      const cases: Case[] = [];
      for (const late of [false, true]) for (const action of Object.keys(DIR_ACTIONS)) cases.push({ name: `${action}-${late ? 'late' : 'now'}`, action, late });
      // nobody's directories (a file f and an empty sub in each); root-only ones outside with the
      // same names in them (f: root's cipher file; sub: empty) and one more only root may see.
      await runOk(AS_NOBODY[0], [
        ...AS_NOBODY.slice(1),
        'sh',
        '-c',
        'cd "$1" && shift && for n; do mkdir "$n" && printf %s "$0" > "$n/f" && mkdir "$n/sub"; done',
        NOBODY_DATA,
        home,
        ...cases.map((c) => c.name),
      ]);
      await sleep(CHECKPOINTED_MS);
      for (const c of cases) {
        const d = path.join(outside, c.name);
        fs.mkdirSync(d);
        fs.chmodSync(d, 0o700);
        plantOutside(path.join(d, 'f'), 'cipher', rootCipher);
        plantOutside(path.join(d, 'root-only-name'), 'plain', rootCipher);
        fs.mkdirSync(path.join(d, 'sub'));
      }
      const before = snapshot(outside);

      const attempt = (c: Case): Promise<Attempt> => {
        const d = path.join(home, c.name);
        return attack({
          warm: [d, path.join(d, 'f'), path.join(d, 'sub')],
          swap: () => {
            fs.renameSync(path.join(cipherHome, c.name), path.join(aside, c.name));
            fs.symlinkSync(path.join(outside, c.name), path.join(cipherHome, c.name));
          },
          action: `D=${q(d)}\n${DIR_ACTIONS[c.action]}`,
          delayMs: c.late ? PAST_TIMEOUTS_MS : 0,
        });
      };
      const results = await runCases(cases, attempt);

      const problems: string[] = [];
      for (const c of cases) {
        const r = results.get(c.name)!;
        const what = describeAttempt(c.name, r);
        if (!r.ready || r.signal !== null) problems.push(`${what}: did not finish`);
        if (r.code === 0) problems.push(`${what}: succeeded`);
        if (/ROOT-ONLY|PLAIN SECRET|root-only-name/.test(r.stdout)) problems.push(`${what}: shows what is in root's directory`);
        // Within the timeout the kernel asks the daemon, which refuses: EIO.
        // (Without the addon, DAREFS_NO_NATIVE=1, the daemon keeps no attributes: ENOTSUP first.)
        else if (!c.late && r.code !== 0 && !/Input\/output error/.test(r.stderr) && !(c.action === 'setfattr' && /Operation not supported/.test(r.stderr))) {
          problems.push(`${what}: not EIO`);
        }
      }
      // Nothing outside changed, nothing made in it.
      problems.push(...changes(before, snapshot(outside)));
      t.deepEqual(problems, []);
      await stopCleanly(t, m);
    },
    MOUNT,
  );
});

/**
 * Swaps a FIFO in for each cipher file in `names` right after the kernel cached it as a regular
 * file, then opens it as `action` says: the open reaches the daemon, which must answer EIO at
 * once. Returns what went wrong.
 */
async function fifoSwaps(m: MountContext, aside: string, names: Array<[string, string]>): Promise<string[]> {
  const problems: string[] = [];
  for (const [name, action] of names) {
    await runOk('mkfifo', [path.join(aside, name)]);
    const file = path.join(m.mountpoint, name);
    const started = Date.now();
    const r = await attack({
      warm: [file],
      swap: () => fs.renameSync(path.join(aside, name), path.join(m.cipherDir, name)),
      action: `F=${q(file)}\n${action}`,
      asRoot: true,
      timeoutMs: 8000,
    });
    const ms = Date.now() - started;
    const what = `${name} (exit ${String(r.code)}${r.signal ? ` ${r.signal}` : ''} after ${ms} ms, stderr ${JSON.stringify(r.stderr)})`;
    if (!r.ready || r.signal !== null) problems.push(`${what}: hung`);
    else if (!/Input\/output error/.test(r.stderr)) problems.push(`${what}: not EIO`);
    else if (ms > 5000) problems.push(`${what}: not promptly`);
  }
  // The daemon serves on.
  const other = await attack({ warm: [m.mountpoint], swap: () => undefined, action: `cat -- ${q(path.join(m.mountpoint, 'other'))}`, asRoot: true, timeoutMs: 8000 });
  if (other.code !== 0 || other.stdout !== 'other file\n') problems.push(`another file does not read (${other.ready ? '' : 'stat of the mount point hung, '}exit ${String(other.code)} ${String(other.signal)}): ${other.stderr}`);
  return problems;
}

test.serial('a FIFO swapped in for a cipher file: EIO at once, the daemon goes on serving and still unmounts on SIGTERM', async (t) => {
  t.timeout(90_000);
  await requirePrograms('sh', 'stat', 'cat', 'mkfifo');
  // A read-only mount opens cipher files O_RDONLY, which on a FIFO waits for a writer.
  let readOnly = false;
  await withMasterMount(
    t,
    async (m) => {
      // fsync'ed: in place, and the daemon holds none of them open once they are closed.
      for (const name of ['victim-read', 'victim-write', 'ro-victim-read', 'other']) await writeFileSynced(path.join(m.mountpoint, name), `${name}\n`);
      await writeFileSynced(path.join(m.mountpoint, 'other'), 'other file\n');
      const aside = path.join(m.root, 'aside');
      fs.mkdirSync(aside);
      t.deepEqual(
        await fifoSwaps(m, aside, [
          ['victim-read', 'cat -- "$F"'],
          ['victim-write', 'printf x >> "$F"'],
        ]),
        [],
        'read-write mount',
      );
      await stopCleanly(t, m);

      readOnly = true;
      await m.respawn();
      t.deepEqual(await fifoSwaps(m, aside, [['ro-victim-read', 'cat -- "$F"']]), [], 'read-only mount');
      await stopCleanly(t, m);
    },
    { extra: () => (readOnly ? ['--read-only'] : []), stopTimeoutMs: 5000 },
  );
});

test.serial('no mount left behind', async (t) => {
  await assertNoFuseMountsLeft();
  t.pass();
});
