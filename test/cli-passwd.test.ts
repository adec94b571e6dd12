import test from 'ava';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI } from './helpers/darefs';

interface Run {
  code: number;
  stderr: string;
}

function darefs(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000, env: { PATH: process.env.PATH, ...env } }, (err, _out, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr: String(stderr) });
    });
  });
}

async function volume(t: { teardown(fn: () => Promise<void>): void }) {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'darefs-passwd-'));
  t.teardown(() => fsp.rm(root, { recursive: true, force: true }));
  const dir = path.join(root, 'cipher');
  const pass = async (name: string, value: string) => {
    const p = path.join(root, name);
    await fsp.writeFile(p, value + '\n', { mode: 0o600 });
    return p;
  };
  return { root, dir, pass };
}

test('passwd re-seals the master key: files written before open with the new passphrase only', async (t) => {
  const { root, dir, pass } = await volume(t);
  const a = await pass('a', 'first passphrase');
  const b = await pass('b', 'second passphrase');
  t.is((await darefs(['init', '-q', '--passfile', a, dir])).code, 0);
  const plain = path.join(root, 'plain.txt');
  await fsp.writeFile(plain, 'kept across the change\n');
  const enc = path.join(dir, 'plain.txt');
  t.is((await darefs(['encrypt', '--volume', dir, '--passfile', a, plain, enc])).code, 0);
  const before = await fsp.readFile(enc);

  const changed = await darefs(['passwd', '--passfile', a, '--new-passfile', b, dir]);
  t.is(changed.code, 0, changed.stderr);
  t.notRegex(changed.stderr, /first passphrase|second passphrase/);
  t.true((await fsp.readFile(enc)).equals(before), 'files untouched');
  t.deepEqual((await fsp.readdir(path.join(dir, '.darefs'))).sort(), ['config.json'], 'no backup or temp file left');

  const out = path.join(root, 'out.txt');
  t.is((await darefs(['decrypt', '--volume', dir, '--passfile', b, enc, out])).code, 0);
  t.is(await fsp.readFile(out, 'utf8'), 'kept across the change\n');
  const old = await darefs(['decrypt', '--volume', dir, '--passfile', a, enc, path.join(root, 'x')]);
  t.is(old.code, 3, 'the old passphrase no longer opens the volume');
});

test('passwd with a wrong current passphrase exits 3 and leaves the config as it was', async (t) => {
  const { dir, pass } = await volume(t);
  const a = await pass('a', 'right one');
  const wrong = await pass('w', 'wrong one');
  const b = await pass('b', 'new one');
  t.is((await darefs(['init', '-q', '--passfile', a, dir])).code, 0);
  const config = await fsp.readFile(path.join(dir, '.darefs', 'config.json'));
  const res = await darefs(['passwd', '--passfile', wrong, '--new-passfile', b, dir]);
  t.is(res.code, 3);
  t.regex(res.stderr, /wrong password/i);
  t.true((await fsp.readFile(path.join(dir, '.darefs', 'config.json'))).equals(config));
});

test('passwd takes the new passphrase from DAREFS_NEW_PASSWORD and refuses a key-file volume', async (t) => {
  const { root, dir, pass } = await volume(t);
  const a = await pass('a', 'one');
  t.is((await darefs(['init', '-q', '--passfile', a, dir])).code, 0);
  t.is((await darefs(['passwd', '--passfile', a, dir], { DAREFS_NEW_PASSWORD: 'two' })).code, 0);
  t.is((await darefs(['passwd', dir, '--new-passfile', a], { DAREFS_PASSWORD: 'two' })).code, 0);

  const keyDir = path.join(root, 'keyvol');
  const key = path.join(root, 'key');
  await fsp.writeFile(key, '00'.repeat(32));
  t.is((await darefs(['init', '-q', '--keyfile', key, keyDir])).code, 0);
  const res = await darefs(['passwd', '--passfile', a, '--new-passfile', await pass('c', 'three'), keyDir]);
  t.not(res.code, 0);
  t.regex(res.stderr, /key file/);
});
