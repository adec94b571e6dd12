// DAREFS_PASSWORD must not outlive its reading (issue 10 item 9): it leaves process.env first
// thing, whether or not the command uses it, so that no child inherits it: not an --extpass
// command, not the background daemon (whose /proc/PID/environ is its own exec's environment).
// The foreground process's /proc/PID/environ shows the environment block it was started with:
// native/darefs_sys zeroes the value there too (without the addon it stays: the README says to
// prefer --passfile).
import test from 'ava';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CLI, daemonPids, writeNcryptFile } from './helpers/darefs';
import { VECTOR_PASSWORD } from './helpers/keys-for-tests';
import { assertNoFuseMountsLeft, cleanupLeftovers, killAndLazyUnmount, makeTestDirs, sleep, withMount } from './helpers/mount';
import { findMount } from '../src/fuse/mountpoint';

test.after.always(() => cleanupLeftovers());

const CANARY = 'env-password-canary-7f3a';

function darefs(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000, env }, (err, _out, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr: String(stderr) });
    });
  });
}


test.serial('with --extpass and DAREFS_PASSWORD set: neither the --extpass command nor the background daemon sees it', async (t) => {
  t.timeout(60_000);
  const dirs = await makeTestDirs();
  t.teardown(async () => {
    for (const pid of await daemonPids(dirs.mountpoint)) await killAndLazyUnmount(pid, dirs.mountpoint).catch(() => undefined);
    if (await findMount(dirs.mountpoint)) await killAndLazyUnmount(-1, dirs.mountpoint).catch(() => undefined);
    await fsp.rm(dirs.root, { recursive: true, force: true });
  });
  await writeNcryptFile(path.join(dirs.cipherDir, 'a.txt'), Buffer.from('hello\n'));
  const seen = path.join(dirs.root, 'extpass-saw');
  const extpass = `printenv DAREFS_PASSWORD DAREFS_NEW_PASSWORD > '${seen}'; echo '${VECTOR_PASSWORD}'`;
  const env = { ...process.env, DAREFS_PASSWORD: CANARY, DAREFS_NEW_PASSWORD: `${CANARY}-new` };
  const r = await darefs(['mount', '--ncrypt', '--extpass', extpass, '--log', path.join(dirs.root, 'log'), dirs.cipherDir, dirs.mountpoint], env);
  t.is(r.code, 0, r.stderr);
  t.is(await fsp.readFile(seen, 'utf8'), '', 'the --extpass command inherited a password variable');
  const [pid] = await daemonPids(dirs.mountpoint);
  t.truthy(pid);
  const environ = await fsp.readFile(`/proc/${pid}/environ`, 'utf8');
  t.false(environ.includes(CANARY), "the daemon's environment holds the password");
  t.false(environ.includes('DAREFS_PASSWORD'));
  const un = await darefs(['umount', dirs.mountpoint], process.env);
  t.is(un.code, 0, un.stderr);
  for (let i = 0; i < 50 && (await daemonPids(dirs.mountpoint)).length > 0; i++) await sleep(100);
});

test.serial('mount -f with DAREFS_PASSWORD: the value is gone from its own /proc/PID/environ', async (t) => {
  t.timeout(60_000);
  const password = VECTOR_PASSWORD + CANARY;
  await withMount(
    t,
    (dirs) => ({
      command: process.execPath,
      args: [CLI, 'mount', '-f', '--ncrypt', dirs.cipherDir, dirs.mountpoint],
      env: { ...process.env, DAREFS_PASSWORD: password },
    }),
    async (m) => {
      t.is(await fsp.readFile(path.join(m.mountpoint, 'a.txt'), 'utf8'), 'hello\n');
      const environ = await fsp.readFile(`/proc/${m.daemon.pid}/environ`, 'utf8');
      t.false(environ.includes(CANARY), 'the password is still in /proc/PID/environ');
    },
    { setup: (dirs) => writeNcryptFile(path.join(dirs.cipherDir, 'a.txt'), Buffer.from('hello\n'), undefined, undefined, password) },
  );
});

test.serial('no mount left behind', async (t) => {
  await assertNoFuseMountsLeft();
  t.pass();
});
