/**
 * `darefs init`, then files encrypted and decrypted with --volume: the volume's master key and
 * settings; a wrong passphrase fails from the config alone (exit 3) before any file is touched.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MASTER_KEY_HEX, runCli, tempDir, testBytes, writeFile } from './helpers/cli';

const PASS = 'volume passphrase for the init tests';

test('init creates the directory and a config; a second init refuses (exit 7) and keeps the config', async (t) => {
  const dir = tempDir(t);
  const vol = path.join(dir, 'a', 'cipher');
  const r = await runCli(['init', vol], { env: { DAREFS_PASSWORD: PASS } });
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  const configFile = path.join(vol, '.darefs', 'config.json');
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  t.like(config, { keyMode: 'master', kdf: 'hmac-sha256', cipher: 'aes', writeVersion: '1.0', convert2to1: true, masterKeySource: 'passphrase' });
  t.is(fs.statSync(vol).mode & 0o777, 0o700);
  t.false(fs.readFileSync(configFile, 'utf8').includes(PASS));

  const before = fs.readFileSync(configFile);
  const again = await runCli(['init', vol], { env: { DAREFS_PASSWORD: 'another one' } });
  t.is(again.code, 7);
  t.regex(again.stderr, /^darefs: init: \S*config\.json already exists: this directory is already a darefs volume/);
  t.true(fs.readFileSync(configFile).equals(before));
});

test('init options: --cipher, --kdf, --dare-version, --keep-v2; a non-empty directory gets a warning', async (t) => {
  const dir = tempDir(t);
  writeFile(dir, 'existing.txt', 'maybe an ncrypt file');
  const passfile = writeFile(tempDir(t), 'pass', `${PASS}\n`);
  const r = await runCli(['init', '--passfile', passfile, '--cipher', 'chacha', '--kdf', 'hkdf-sha256', '--dare-version', '2', '--keep-v2', dir]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /warning: \S+ is not empty \(1 entry\): files already there, such as ones made by ncrypt, will not open in master mode/);
  const config = JSON.parse(fs.readFileSync(path.join(dir, '.darefs', 'config.json'), 'utf8')) as Record<string, unknown>;
  t.like(config, { kdf: 'hkdf-sha256', cipher: 'chacha', writeVersion: '2.0', convert2to1: false });
});

test('init, then encrypt --volume and decrypt --volume; the file follows the volume settings', async (t) => {
  const dir = tempDir(t);
  const vol = path.join(dir, 'vol');
  t.is((await runCli(['init', '--cipher', 'chacha', vol], { env: { DAREFS_PASSWORD: PASS } })).code, 0);
  const plain = testBytes(65536 + 99, 11);
  const input = writeFile(dir, 'plain', plain);
  const enc = path.join(vol, 'plain');
  const e = await runCli(['encrypt', '--volume', vol, input, enc], { env: { DAREFS_PASSWORD: PASS } });
  t.is(e.code, 0, e.stderr);
  const file = fs.readFileSync(enc);
  t.is(file[32], 0x10, "the volume's writeVersion 1.0");
  t.is(file[33], 0x01, "the volume's cipher");
  const out = path.join(dir, 'plain.out');
  const d = await runCli(['decrypt', '--volume', vol, enc, out], { env: { DAREFS_PASSWORD: PASS } });
  t.is(d.code, 0, d.stderr);
  t.true(fs.readFileSync(out).equals(plain));
  // The volume key is not the passphrase used as an ncrypt password.
  const n = await runCli(['decrypt', '--ncrypt', enc, path.join(dir, 'x')], { env: { DAREFS_PASSWORD: PASS } });
  t.is(n.code, 3);
});

test('a wrong passphrase for --volume: exit 3 before any file is touched', async (t) => {
  const dir = tempDir(t);
  const vol = path.join(dir, 'vol');
  t.is((await runCli(['init', vol], { env: { DAREFS_PASSWORD: PASS } })).code, 0);
  const input = writeFile(dir, 'plain', 'data');
  const out = path.join(dir, 'out');
  const e = await runCli(['encrypt', '--volume', vol, input, out], { env: { DAREFS_PASSWORD: 'not the passphrase' } });
  t.is(e.code, 3);
  t.regex(e.stderr, /^darefs: encrypt: wrong password for \S*vol \(or its settings in \.darefs\/config\.json were changed: they are bound to the key\): nothing was read or written/);
  t.false(fs.existsSync(out));
  const enc = path.join(vol, 'f');
  t.is((await runCli(['encrypt', '--volume', vol, input, enc], { env: { DAREFS_PASSWORD: PASS } })).code, 0);
  const atime = fs.statSync(enc).mtimeMs;
  const d = await runCli(['decrypt', '--volume', vol, enc, out], { env: { DAREFS_PASSWORD: 'not the passphrase' } });
  t.is(d.code, 3);
  t.false(fs.existsSync(out));
  t.is(fs.statSync(enc).mtimeMs, atime);
  t.false(e.stderr.includes('not the passphrase') || d.stderr.includes('not the passphrase'));
});

test('a key-file volume: init --keyfile, then --volume needs --keyfile (exit 2 without), a wrong one is exit 3', async (t) => {
  const dir = tempDir(t);
  const vol = path.join(dir, 'vol');
  const keyfile = writeFile(dir, 'master.hex', MASTER_KEY_HEX);
  t.is((await runCli(['init', '--keyfile', keyfile, '--dare-version', '2', vol])).code, 0);
  const input = writeFile(dir, 'plain', testBytes(5000, 2));
  const enc = path.join(vol, 'f');
  const e = await runCli(['encrypt', '--volume', vol, '--keyfile', keyfile, input, enc]);
  t.is(e.code, 0, e.stderr);
  t.is(fs.readFileSync(enc)[32], 0x20);
  // The same key alone (master mode, HMAC) opens it: --volume adds only the settings and the check.
  const alone = await runCli(['decrypt', '--keyfile', keyfile, enc]);
  t.is(alone.code, 0, alone.stderr);
  t.true(alone.stdout.equals(fs.readFileSync(input)));
  const without = await runCli(['decrypt', '--volume', vol, enc]);
  t.is(without.code, 2);
  t.regex(without.stderr, /uses an external key file: give it with --keyfile FILE/);
  const wrongKey = writeFile(dir, 'wrong.hex', MASTER_KEY_HEX.replace(/^00/, '01'));
  const wrong = await runCli(['decrypt', '--volume', vol, '--keyfile', wrongKey, enc]);
  t.is(wrong.code, 3);
  t.regex(wrong.stderr, /wrong key file for/);
});

test('--volume on a directory without a config, or a missing one: exit 7 with what to do', async (t) => {
  const dir = tempDir(t);
  const r = await runCli(['decrypt', '--volume', dir, '-'], { input: Buffer.alloc(40), env: { DAREFS_PASSWORD: PASS } });
  t.is(r.code, 7);
  t.regex(r.stderr, /is not a darefs volume \(no \S*config\.json\): run 'darefs init \S+' first, or use --ncrypt/);
  const m = await runCli(['encrypt', '--volume', path.join(dir, 'nope')], { input: 'x', env: { DAREFS_PASSWORD: PASS } });
  t.is(m.code, 7);
  t.regex(m.stderr, /nope does not exist/);
});

test('init usage errors: no directory, --keyfile with --passfile, a bad --kdf', async (t) => {
  const dir = tempDir(t);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  const none = await runCli(['init']);
  t.is(none.code, 2);
  t.regex(none.stderr, /missing argument: CIPHERDIR/);
  const both = await runCli(['init', '--keyfile', keyfile, '--passfile', keyfile, path.join(dir, 'v')]);
  t.is(both.code, 2);
  const kdf = await runCli(['init', '--kdf', 'hkdf', path.join(dir, 'v')]);
  t.is(kdf.code, 2);
  t.regex(kdf.stderr, /invalid value 'hkdf' for --kdf: expected hmac-sha256 or hkdf-sha256 \(did you mean hkdf-sha256\?\)/);
  t.false(fs.existsSync(path.join(dir, 'v')));
});
