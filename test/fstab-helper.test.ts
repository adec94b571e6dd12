/**
 * Mounting the way Linux users do: `scripts/mount.darefs` linked as /sbin/mount.fuse.darefs, then
 * `mount -t fuse.darefs -o ...` and `mount --fstab FILE MOUNTPOINT` (mount(8) finds the helper
 * exactly as for an /etc/fstab line, without editing /etc/fstab); and the command lines of
 * `scripts/darefs@.service`, run with systemd's variable substitution.
 *
 * Needs root, mount(8) and /dev/fuse, and a writable /sbin: otherwise the tests are skipped with
 * the reason in their title. The symlink is removed at the end, always; every mount is undone.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findMount } from '../src/fuse/mountpoint';
import { childEnv } from './helpers/cli';
import { CLI, daemonPids, writeNcryptFile } from './helpers/darefs';
import { VECTOR_PASSWORD } from './helpers/keys-for-tests';
import { assertNoFuseMountsLeft, killAndLazyUnmount, makeTestDirs, sleep, withMount, type MountDirs } from './helpers/mount';

const REPO = path.resolve(__dirname, '..', '..');
const SCRIPT = path.join(REPO, 'scripts', 'mount.darefs');
const UNIT = path.join(REPO, 'scripts', 'darefs@.service');
const HELPER = '/sbin/mount.fuse.darefs';

/** Why the helper tests cannot run here, or undefined. */
function whyNot(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to mount and to link /sbin/mount.fuse.darefs';
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse';
  try {
    execFileSync('mount', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'no mount(8)';
  }
  try {
    fs.accessSync('/sbin', fs.constants.W_OK);
  } catch {
    return '/sbin is not writable';
  }
  const present = fs.lstatSync(HELPER, { throwIfNoEntry: false }) !== undefined;
  if (present && readlinkOrUndefined(HELPER) !== SCRIPT) return `${HELPER} already exists and is not ours; not replacing it`;
  return undefined;
}

function readlinkOrUndefined(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

const reason = whyNot();
const helperTest = reason === undefined ? test.serial : test.serial.skip;
const title = (name: string): string => (reason === undefined ? name : `${name} (skipped: ${reason})`);

// The symlink: made once, removed at the end (only if we made it).
let madeLink = false;
test.before(() => {
  if (reason !== undefined) return;
  if (readlinkOrUndefined(HELPER) === SCRIPT) return; // someone's install of this very checkout
  fs.symlinkSync(SCRIPT, HELPER);
  madeLink = true;
});
test.after.always(async () => {
  if (madeLink && readlinkOrUndefined(HELPER) === SCRIPT) fs.unlinkSync(HELPER);
  await assertNoFuseMountsLeft();
});

interface Run {
  code: number;
  output: string;
}

function run(file: string, args: string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, env: childEnv({ LC_ALL: 'C' }) }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, output: `${String(stdout)}${String(stderr)}` });
    });
  });
}


/** Temp dirs under the harness's root; teardown kills any daemon, unmounts, removes them. */
async function dirsFor(t: ExecutionContext): Promise<MountDirs & { pass: string; log: string }> {
  const dirs = await makeTestDirs();
  t.teardown(async () => {
    for (const pid of await daemonPids(dirs.mountpoint)) await killAndLazyUnmount(pid, dirs.mountpoint).catch(() => undefined);
    if (await findMount(dirs.mountpoint)) await killAndLazyUnmount(-1, dirs.mountpoint).catch(() => undefined);
    if (!(await findMount(dirs.mountpoint))) await fs.promises.rm(dirs.root, { recursive: true, force: true });
  });
  const pass = path.join(dirs.root, 'pass');
  await fs.promises.writeFile(pass, `${VECTOR_PASSWORD}\n`, { mode: 0o600 });
  return { ...dirs, pass, log: path.join(dirs.root, 'daemon.log') };
}

async function unmountAndCheck(t: ExecutionContext, mountpoint: string): Promise<void> {
  const un = await run(process.execPath, [CLI, 'umount', mountpoint]);
  t.is(un.code, 0, un.output);
  t.falsy(await findMount(mountpoint), 'unmounted');
  for (let i = 0; i < 50 && (await daemonPids(mountpoint)).length > 0; i++) await sleep(100);
  t.deepEqual(await daemonPids(mountpoint), [], 'the daemon is gone');
}

helperTest(title('mount -t fuse.darefs -o passfile=...,ncrypt runs the helper: the volume mounts and reads'), async (t) => {
  t.timeout(60_000);
  const d = await dirsFor(t);
  await writeNcryptFile(path.join(d.cipherDir, 'hello.txt'), Buffer.from('hello from fstab\n'));
  const r = await run('mount', ['-t', 'fuse.darefs', '-o', `passfile=${d.pass},ncrypt,log=${d.log}`, d.cipherDir, d.mountpoint]);
  t.is(r.code, 0, r.output);
  const entry = await findMount(d.mountpoint);
  t.is(entry?.fsType, 'fuse.darefs');
  t.is(entry?.source, d.cipherDir);
  t.is(await fs.promises.readFile(path.join(d.mountpoint, 'hello.txt'), 'utf8'), 'hello from fstab\n');
  t.is((await daemonPids(d.mountpoint)).length, 1, 'one background daemon');
  await unmountAndCheck(t, d.mountpoint);
});

helperTest(title('mount --fstab FILE MOUNTPOINT: an fstab line with generic options mounts a volume read-only'), async (t) => {
  t.timeout(60_000);
  const d = await dirsFor(t);
  const init = await run(process.execPath, [CLI, 'init', '--passfile', d.pass, d.cipherDir]);
  t.is(init.code, 0, init.output);
  const plain = path.join(d.root, 'note.txt');
  await fs.promises.writeFile(plain, 'a note\n');
  const enc = await run(process.execPath, [CLI, 'encrypt', '--volume', d.cipherDir, '--passfile', d.pass, plain, path.join(d.cipherDir, 'note.txt')]);
  t.is(enc.code, 0, enc.output);
  const fstab = path.join(d.root, 'fstab');
  const options = `passfile=${d.pass},ro,allow_other,noauto,nofail,_netdev,x-systemd.automount,defaults,log=${d.log}`;
  await fs.promises.writeFile(fstab, `# test fstab\n${d.cipherDir} ${d.mountpoint} fuse.darefs ${options} 0 0\n`);

  // -f (fake): the helper checks the options and mounts nothing.
  const fake = await run('mount', ['-f', '--fstab', fstab, d.mountpoint]);
  t.is(fake.code, 0, fake.output);
  t.falsy(await findMount(d.mountpoint));

  const r = await run('mount', ['-v', '--fstab', fstab, d.mountpoint]);
  t.is(r.code, 0, r.output);
  const shown = /mount\.darefs: (\S+ mount .*)/.exec(r.output)?.[1] ?? '';
  for (const arg of [`--passfile ${d.pass}`, '--read-only', '--allow-other', `--log ${d.log}`]) t.true(shown.includes(arg), `${arg} in: ${shown}`);
  t.false(/noauto|nofail|_netdev|x-systemd|defaults/.test(shown), `generic options are not passed on: ${shown}`);
  t.false(r.output.includes(VECTOR_PASSWORD), 'the password is never shown');
  const entry = await findMount(d.mountpoint);
  t.is(entry?.fsType, 'fuse.darefs');
  t.regex(entry?.options ?? '', /(^|,)ro(,|$)/);
  t.regex(entry?.superOptions ?? '', /allow_other/);
  t.is(await fs.promises.readFile(path.join(d.mountpoint, 'note.txt'), 'utf8'), 'a note\n');
  await t.throwsAsync(fs.promises.writeFile(path.join(d.mountpoint, 'new.txt'), 'x'), { code: 'EROFS' });
  await unmountAndCheck(t, d.mountpoint);
});

helperTest(title('the helper refuses a password in the options, unknown options, and a wrong passfile'), async (t) => {
  t.timeout(60_000);
  const d = await dirsFor(t);
  await writeNcryptFile(path.join(d.cipherDir, 'a'), Buffer.from('x'));
  const pw = await run('mount', ['-t', 'fuse.darefs', '-o', 'ncrypt,password=hunter2', d.cipherDir, d.mountpoint]);
  t.not(pw.code, 0);
  t.regex(pw.output, /a password never goes in the mount options.*passfile=FILE/);
  const unknown = await run('mount', ['-t', 'fuse.darefs', '-o', `passfile=${d.pass},ncrypt,bogus_opt`, d.cipherDir, d.mountpoint]);
  t.not(unknown.code, 0);
  t.regex(unknown.output, /unknown option 'bogus_opt'/);
  const wrong = path.join(d.root, 'wrong');
  await fs.promises.writeFile(wrong, 'wrong password\n');
  const bad = await run('mount', ['-t', 'fuse.darefs', '-o', `passfile=${wrong},ncrypt,log=${d.log}`, d.cipherDir, d.mountpoint]);
  t.is(bad.code, 3, bad.output);
  t.regex(bad.output, /wrong password/);
  t.falsy(await findMount(d.mountpoint));
});

/** systemd's substitution: ${VAR} is one word, a bare $VAR word splits at whitespace. */
function substitute(line: string, env: Record<string, string>): string[] {
  const words: string[] = [];
  for (const word of line.trim().split(/\s+/)) {
    const bare = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(word);
    if (bare) words.push(...(env[bare[1]] ?? '').split(/\s+/).filter((w) => w !== ''));
    else words.push(word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => env[name] ?? ''));
  }
  return words;
}

const unitReason = process.getuid?.() !== 0 || !fs.existsSync('/dev/fuse') ? 'needs root and /dev/fuse to mount' : undefined;
const unitTest = unitReason === undefined ? test.serial : test.serial.skip;

unitTest(`darefs@.service: ExecStart (darefs mount -f) serves the volume, ExecStop unmounts and it exits 0${unitReason === undefined ? '' : ` (skipped: ${unitReason})`}`, async (t) => {
  t.timeout(60_000);
  const unit = await fs.promises.readFile(UNIT, 'utf8');
  t.regex(unit, /^Type=simple$/m);
  t.regex(unit, /^EnvironmentFile=\/etc\/darefs\/%i\.conf$/m);
  t.regex(unit, /^Restart=on-failure$/m);
  const line = (key: string): string => {
    const m = new RegExp(`^${key}=(.*)$`, 'm').exec(unit);
    if (!m) throw new Error(`no ${key}= in ${UNIT}`);
    return m[1];
  };
  const wrapper = path.join(REPO, 'scripts', 'darefs');
  // The unit runs the installed /usr/local/bin/darefs: the wrapper script of this checkout.
  const command = (key: string, env: Record<string, string>): string[] => {
    const words = substitute(line(key), env);
    t.is(words[0], '/usr/local/bin/darefs');
    return [wrapper, ...words.slice(1)];
  };
  let stopArgs: string[] = [];
  await withMount(
    t,
    (dirs) => {
      const env = { CIPHERDIR: dirs.cipherDir, MOUNTPOINT: dirs.mountpoint, PASSFILE: path.join(dirs.root, 'pass'), DAREFS_OPTS: '--ncrypt  --read-only' };
      const [file, ...args] = command('ExecStart', env);
      stopArgs = command('ExecStop', env);
      return { command: file, args, env: childEnv() };
    },
    async (m) => {
      t.is(await fs.promises.readFile(path.join(m.mountpoint, 'unit.txt'), 'utf8'), 'served by the unit\n');
      const [file, ...args] = stopArgs;
      const stop = await run(file, args);
      t.is(stop.code, 0, stop.output);
      const exit = await Promise.race([m.daemon.exited, sleep(10_000).then(() => undefined)]);
      t.deepEqual(exit, { code: 0, signal: null }, `the service's main process ends cleanly\n${m.output()}`);
      t.falsy(await findMount(m.mountpoint));
    },
    {
      setup: async (dirs) => {
        await fs.promises.writeFile(path.join(dirs.root, 'pass'), `${VECTOR_PASSWORD}\n`, { mode: 0o600 });
        await writeNcryptFile(path.join(dirs.cipherDir, 'unit.txt'), Buffer.from('served by the unit\n'));
      },
      fsType: 'fuse.darefs',
    },
  );
});
