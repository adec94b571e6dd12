/**
 * The daemon process holds keys and plaintext (issue 10, item 13): it dumps no core, is not
 * dumpable (no ptrace or /proc/PID/mem for other processes of its user), and cached plaintext is
 * zeroed when it leaves the package cache.
 */
import test from 'ava';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { PackageCache } from '../src/store';
import { darefsMount, writeNcryptFile, writePassfile } from './helpers/darefs';
import { assertNoFuseMountsLeft, withMount } from './helpers/mount';
import { requirePrograms, runOk } from './helpers/rw';

test.after.always(async () => {
  await assertNoFuseMountsLeft();
});

/** RLIMIT_CORE of a process as /proc/PID/limits shows it: [soft, hard]. */
async function coreLimit(pid: number | 'self'): Promise<string[]> {
  const limits = await fsp.readFile(`/proc/${pid}/limits`, 'utf8');
  const line = limits.split('\n').find((l) => l.startsWith('Max core file size'));
  return line!.split(/\s{2,}/).slice(1, 3);
}

test('hardenProcess: RLIMIT_CORE 0 and not dumpable (a non-dumpable process\'s /proc files belong to root)', async (t) => {
  await requirePrograms('setpriv');
  const sys = path.resolve(__dirname, '..', 'src', 'sys', 'index.js');
  // As uid 1000: /proc/self/environ belongs to the process's own uid while it is dumpable, to
  // root once it is not.
  const script = `
    const fs = require('fs');
    const { hardenProcess } = require(${JSON.stringify(sys)});
    const before = fs.statSync('/proc/self/environ').uid;
    const problem = hardenProcess();
    const after = fs.statSync('/proc/self/environ').uid;
    const core = fs.readFileSync('/proc/self/limits', 'utf8').split('\\n').find((l) => l.startsWith('Max core file size'));
    console.log(JSON.stringify({ before, after, problem: problem ?? null, core: core.split(/\\s{2,}/).slice(1, 3) }));
  `;
  const res = await runOk('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', '--', process.execPath, '-e', script], { timeoutMs: 20_000 });
  t.deepEqual(JSON.parse(res.stdout), { before: 1000, after: 0, problem: null, core: ['0', '0'] });
});

test.serial('a mounted daemon dumps no core', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      t.is(await fsp.readFile(path.join(m.mountpoint, 'a.txt'), 'utf8'), 'x');
      t.deepEqual(await coreLimit(m.daemon.pid), ['0', '0']);
      t.notRegex(m.output(), /cannot harden/);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'a.txt'), Buffer.from('x'));
      },
    },
  );
});

test('plaintext leaving the package cache is zeroed: evicted, replaced, deleted, dropped with its file', (t) => {
  const cache = new PackageCache(3 * 1024);
  const plain = (fill: number): Buffer => Buffer.alloc(1024, fill);
  const a = plain(1);
  const b = plain(2);
  const c = plain(3);
  const d = plain(4);
  cache.set(1, 0, a);
  cache.set(1, 1, b);
  cache.set(1, 2, c);
  t.true(a.every((x) => x === 1), 'still cached');
  cache.set(2, 0, d); // evicts a, the least recently used
  t.true(a.every((x) => x === 0), 'evicted: zeroed');
  const b2 = plain(5);
  cache.set(1, 1, b2); // replaces b
  t.true(b.every((x) => x === 0), 'replaced: zeroed');
  cache.delete(2, 0);
  t.true(d.every((x) => x === 0), 'deleted: zeroed');
  cache.dropFile(1, [1, 2]);
  t.true(b2.every((x) => x === 0) && c.every((x) => x === 0), 'dropped with its file: zeroed');
});
