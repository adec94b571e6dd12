/**
 * The password prompt, driven through a pseudo-terminal like a user at a keyboard: no echo,
 * Backspace edits, Ctrl-C aborts (exit 130, no output), init asks twice. The terminal
 * transcript must never show the password.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAIN, PASSWORD, tempDir, writeFile } from './helpers/cli';
import { ptyDriver, runInPty } from './helpers/pty';
import { vectorPath } from './helpers/vectors';

const driver = ptyDriver();
const ptyTest = driver === null ? test.skip : test;
if (driver === null) {
  test('pseudo-terminal tests need python3 (pty module) or util-linux script(1)', (t) => {
    t.log('neither python3 nor script(1) works here: the prompt tests are skipped');
    t.pass();
  });
}

ptyTest('decrypt prompts on the terminal without echo; Backspace edits the line', async (t) => {
  const dir = tempDir(t);
  const out = path.join(dir, 'plain');
  // Type one letter too many, then erase it.
  const typed = `${PASSWORD}X\x7f\r`;
  const r = await runInPty([process.execPath, MAIN, 'decrypt', vectorPath('ncrypt-v20-aes-65537.dare'), out], [{ expect: 'Password: ', send: typed }]);
  t.log(`driver: ${r.driver}`);
  t.is(r.code, 0, r.transcript);
  t.true(fs.readFileSync(out).equals(fs.readFileSync(vectorPath('pt-65537.bin'))));
  t.false(r.transcript.includes('correct'), `echoed: ${JSON.stringify(r.transcript)}`);
  t.false(r.transcript.includes('horse'));
  // (On a slow machine a progress line may follow: the run lasted over a second.)
  t.regex(r.transcript, /^Password: \r\n/);
});

ptyTest('a wrong password typed at the prompt: exit 3, no output, nothing echoed', async (t) => {
  const dir = tempDir(t);
  const out = path.join(dir, 'plain');
  const r = await runInPty(
    [process.execPath, MAIN, 'decrypt', vectorPath('ncrypt-v10-chacha-65537.dare'), out],
    [{ expect: 'Password: ', send: 'typed-wrong-secret\r' }],
  );
  t.is(r.code, 3, r.transcript);
  t.false(fs.existsSync(out));
  t.false(r.transcript.includes('typed-wrong-secret'));
  t.regex(r.transcript, /wrong password or key/);
});

ptyTest('Ctrl-C at the prompt aborts: exit 130, no output file', async (t) => {
  const dir = tempDir(t);
  const out = path.join(dir, 'plain');
  const r = await runInPty([process.execPath, MAIN, 'decrypt', vectorPath('ncrypt-v20-aes-1.dare'), out], [{ expect: 'Password: ', send: 'half\x03' }]);
  t.is(r.code, 130, r.transcript);
  t.false(fs.existsSync(out));
  t.regex(r.transcript, /darefs: decrypt: interrupted/);
  t.false(r.transcript.includes('half'));
});

ptyTest('with data on a pipe, encrypt still prompts on the controlling terminal (/dev/tty)', async (t) => {
  const dir = tempDir(t);
  const input = writeFile(dir, 'plain', 'piped plaintext');
  const out = path.join(dir, 'out.enc');
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const r = await runInPty(
    ['/bin/sh', '-c', `cat ${q(input)} | ${q(process.execPath)} ${q(MAIN)} encrypt > ${q(out)}`],
    [{ expect: 'Password: ', send: 'pipe-secret\r' }],
  );
  t.is(r.code, 0, r.transcript);
  t.false(r.transcript.includes('pipe-secret'));
  t.is(fs.statSync(out).size, 32 + 32 + 'piped plaintext'.length);
});

ptyTest('init asks for the passphrase twice; a mismatch changes nothing (exit 3)', async (t) => {
  const dir = tempDir(t);
  const vol = path.join(dir, 'vol');
  const bad = await runInPty(
    [process.execPath, MAIN, 'init', vol],
    [
      { expect: 'Passphrase: ', send: 'first-secret\r' },
      { expect: 'Repeat passphrase: ', send: 'other-secret\r' },
    ],
  );
  t.is(bad.code, 3, bad.transcript);
  t.regex(bad.transcript, /the two passphrases do not match/);
  t.false(fs.existsSync(path.join(vol, '.darefs', 'config.json')));
  const good = await runInPty(
    [process.execPath, MAIN, 'init', vol],
    [
      { expect: 'Passphrase: ', send: 'vol-secret\r' },
      { expect: 'Repeat passphrase: ', send: 'vol-secret\r' },
    ],
  );
  t.is(good.code, 0, good.transcript);
  t.true(fs.existsSync(path.join(vol, '.darefs', 'config.json')));
  for (const r of [bad, good]) t.false(/first-secret|other-secret|vol-secret/.test(r.transcript));
});
