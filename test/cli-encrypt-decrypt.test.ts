/**
 * `darefs encrypt` / `darefs decrypt` as a user runs them: round trips in both key modes, both
 * ciphers and both DARE versions; an independent decryption (bare node:crypto, from FORMAT.md)
 * of what `encrypt --ncrypt` writes; password sources; the output-file rules; `decrypt --volume
 * --path` by a path of the plaintext view, names mapped (encrypted ones computed independently).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAIN, MASTER_KEY_HEX, childEnv, runCli, tempDir, testBytes, writeFile } from './helpers/cli';
import { refEntryOf as entryOf, refVolumeNameKeys as volumeNameKeys } from './helpers/names';

const PW = 'Tr0ub4dor&3 unique-test-password';

// ---- an independent reference decryptor, written from FORMAT.md with node:crypto only ----

function scryptNcrypt(password: string, salt: Buffer): Buffer {
  return crypto.scryptSync(Buffer.from(password, 'utf8'), salt, 32, { N: 32768, r: 16, p: 1, maxmem: 256 * 1024 * 1024 });
}

/** Decrypts `prefix || packages` with `key`; throws on anything FORMAT.md §3 rejects. */
function referenceDecrypt(file: Buffer, key: Buffer): Buffer {
  const parts: Buffer[] = [];
  let off = 32;
  let index = 0;
  let version: number | undefined;
  let sawFinal = false;
  while (off < file.length) {
    if (sawFinal) throw new Error('data after the final package');
    const header = file.subarray(off, off + 16);
    if (header.length < 16) throw new Error('truncated header');
    if (version === undefined) version = header[0];
    if (header[0] !== version || (version !== 0x10 && version !== 0x20)) throw new Error('bad version');
    const length = header.readUInt16LE(2) + 1;
    const ciphertext = file.subarray(off + 16, off + 16 + length);
    const tag = file.subarray(off + 16 + length, off + 32 + length);
    if (tag.length !== 16) throw new Error('truncated package');
    const nonce = Buffer.from(header.subarray(4, 16));
    if (version === 0x10) {
      if (header.readUInt32LE(4) !== index) throw new Error('sequence number');
    } else {
      nonce.writeUInt32LE((nonce.readUInt32LE(8) ^ index) >>> 0, 8);
      sawFinal = (header[4] & 0x80) !== 0;
      if (!sawFinal && length !== 65536) throw new Error('short non-final package');
    }
    const algorithm = header[1] === 0 ? 'aes-256-gcm' : header[1] === 1 ? 'chacha20-poly1305' : undefined;
    if (algorithm === undefined) throw new Error('bad cipher');
    const d = crypto.createDecipheriv(algorithm as 'aes-256-gcm', key, nonce, { authTagLength: 16 });
    d.setAAD(header.subarray(0, 4));
    d.setAuthTag(tag);
    parts.push(d.update(ciphertext), d.final());
    off += 32 + length;
    index++;
  }
  if (version === 0x20 && !sawFinal) throw new Error('no final package');
  return Buffer.concat(parts);
}

test('a file from `darefs encrypt --ncrypt --dare-version 2` decrypts with an independent implementation (scrypt + AES-GCM)', async (t) => {
  const dir = tempDir(t);
  const plain = testBytes(65536 * 2 + 4321, 7);
  const input = writeFile(dir, 'plain', plain);
  const enc = path.join(dir, 'plain.enc');
  const r = await runCli(['encrypt', '--ncrypt', '--dare-version', '2', input, enc], { env: { DAREFS_PASSWORD: PW } });
  t.is(r.code, 0, r.stderr);
  const file = fs.readFileSync(enc);
  t.is(file.length, 32 + 3 * 32 + plain.length);
  t.is(file[32], 0x20, 'DARE 2.0');
  t.is(file[33], 0x00, 'AES-256-GCM');
  const key = scryptNcrypt(PW, file.subarray(0, 32));
  t.true(referenceDecrypt(file, key).equals(plain));
  // All packages of a 2.0 stream carry the same nonce; only the last has the final flag.
  t.true(file.subarray(32 + 5, 32 + 16).equals(file.subarray(32 + 65568 + 5, 32 + 65568 + 16)));
  t.is(file[32 + 4] & 0x80, 0);
  t.is(file[32 + 2 * 65568 + 4] & 0x80, 0x80);
});

test('a ChaCha20-Poly1305 DARE 1.0 file from `darefs encrypt` decrypts with the independent implementation', async (t) => {
  const dir = tempDir(t);
  const plain = testBytes(70000, 8);
  const input = writeFile(dir, 'plain', plain);
  const enc = path.join(dir, 'plain.enc');
  const r = await runCli(['encrypt', '--cipher', 'chacha', '--dare-version', '1', input, enc], { env: { DAREFS_PASSWORD: PW } });
  t.is(r.code, 0, r.stderr);
  const file = fs.readFileSync(enc);
  t.is(file[32], 0x10);
  t.is(file[33], 0x01);
  t.true(referenceDecrypt(file, scryptNcrypt(PW, file.subarray(0, 32))).equals(plain));
});

test('master mode with --keyfile: HMAC-SHA256(master key, prefix) by default, HKDF-SHA256 with --kdf', async (t) => {
  const dir = tempDir(t);
  const plain = testBytes(1000, 9);
  const input = writeFile(dir, 'plain', plain);
  const keyfile = writeFile(dir, 'master.hex', `${MASTER_KEY_HEX}\n`);
  const master = Buffer.from(MASTER_KEY_HEX, 'hex');
  for (const kdf of ['hmac-sha256', 'hkdf-sha256'] as const) {
    const enc = path.join(dir, `${kdf}.enc`);
    const args = kdf === 'hmac-sha256' ? ['encrypt', '--keyfile', keyfile, input, enc] : ['encrypt', '--keyfile', keyfile, '--kdf', kdf, input, enc];
    const r = await runCli(args);
    t.is(r.code, 0, r.stderr);
    const file = fs.readFileSync(enc);
    const prefix = file.subarray(0, 32);
    const key =
      kdf === 'hmac-sha256'
        ? crypto.createHmac('sha256', master).update(prefix).digest()
        : Buffer.from(crypto.hkdfSync('sha256', master, prefix, Buffer.alloc(0), 32));
    t.true(referenceDecrypt(file, key).equals(plain), kdf);
  }
  // The other kdf gives another key: package 0 fails, "wrong key" (3).
  const r = await runCli(['decrypt', '--keyfile', keyfile, path.join(dir, 'hkdf-sha256.enc'), path.join(dir, 'out')]);
  t.is(r.code, 3);
  t.false(fs.existsSync(path.join(dir, 'out')));
  const ok = await runCli(['decrypt', '--keyfile', keyfile, '--kdf', 'hkdf-sha256', path.join(dir, 'hkdf-sha256.enc')]);
  t.is(ok.code, 0, ok.stderr);
  t.true(ok.stdout.equals(plain));
});

// ---- round trips ----

const COMBOS = [
  { cipher: 'aes', version: '1', size: 65537 },
  { cipher: 'aes', version: '2', size: 65536 },
  { cipher: 'chacha', version: '1', size: 1 },
  { cipher: 'chacha', version: '2', size: 3 * 65536 + 17 },
] as const;

for (const c of COMBOS) {
  test(`round trip, ncrypt mode, ${c.cipher}, DARE ${c.version}, ${c.size} bytes`, async (t) => {
    const dir = tempDir(t);
    const plain = testBytes(c.size, c.size);
    const input = writeFile(dir, 'plain', plain);
    const passfile = writeFile(dir, 'pass', `${PW}\n`);
    const enc = path.join(dir, 'plain.enc');
    const e = await runCli(['encrypt', '--ncrypt', '--passfile', passfile, '--cipher', c.cipher, '--dare-version', c.version, input, enc]);
    t.is(e.code, 0, e.stderr);
    const file = fs.readFileSync(enc);
    t.is(file[32], c.version === '1' ? 0x10 : 0x20);
    t.is(file[33], c.cipher === 'aes' ? 0 : 1);
    // --passfile for encrypt, DAREFS_PASSWORD for decrypt: both give the same password.
    const out = path.join(dir, 'plain.out');
    const d = await runCli(['decrypt', enc, out], { env: { DAREFS_PASSWORD: PW } });
    t.is(d.code, 0, d.stderr);
    t.true(fs.readFileSync(out).equals(plain));
    for (const r of [e, d]) t.false(r.stderr.includes(PW) || r.stdout.includes(PW));
  });

  test(`round trip, master mode (--keyfile), ${c.cipher}, DARE ${c.version}, ${c.size} bytes, through stdin and stdout`, async (t) => {
    const dir = tempDir(t);
    const plain = testBytes(c.size, c.size + 1);
    const keyfile = writeFile(dir, 'master.key', crypto.randomBytes(32));
    const e = await runCli(['encrypt', '--keyfile', keyfile, '--cipher', c.cipher, '--dare-version', c.version], { input: plain });
    t.is(e.code, 0, e.stderr);
    t.is(e.stdout.length, 32 + Math.ceil(c.size / 65536) * 32 + c.size);
    const d = await runCli(['decrypt', '--keyfile', keyfile, '-', '-'], { input: e.stdout });
    t.is(d.code, 0, d.stderr);
    t.true(d.stdout.equals(plain));
  });
}

test('an empty input encrypts to the 32-byte prefix alone and decrypts to nothing', async (t) => {
  const dir = tempDir(t);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  const e = await runCli(['encrypt', '--keyfile', keyfile]);
  t.is(e.code, 0, e.stderr);
  t.is(e.stdout.length, 32);
  const out = path.join(dir, 'empty.out');
  const d = await runCli(['decrypt', '--keyfile', keyfile, '-', out], { input: e.stdout });
  t.is(d.code, 0, d.stderr);
  t.is(fs.statSync(out).size, 0);
});

test('a several-MiB stream through encrypt and decrypt (pipes both ways)', async (t) => {
  const dir = tempDir(t);
  const plain = testBytes(5 * 1024 * 1024 + 3, 5);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  const e = await runCli(['encrypt', '--keyfile', keyfile, '--cipher', 'chacha'], { input: plain });
  t.is(e.code, 0, e.stderr);
  const d = await runCli(['decrypt', '--keyfile', keyfile], { input: e.stdout });
  t.is(d.code, 0, d.stderr);
  t.true(d.stdout.equals(plain));
});

// ---- passwords ----

test('--passfile takes the first line only (LF or CRLF), --extpass the first line of its output', async (t) => {
  const dir = tempDir(t);
  const plain = testBytes(100, 3);
  const input = writeFile(dir, 'plain', plain);
  const enc = path.join(dir, 'plain.enc');
  const pf = writeFile(dir, 'pass', `${PW}\r\nsecond line ignored\n`);
  t.is((await runCli(['encrypt', '--passfile', pf, input, enc])).code, 0);
  const pwfile = writeFile(dir, 'pw-for-extpass', `${PW}\nmore\n`);
  const d = await runCli(['decrypt', '--extpass', `cat '${pwfile}'`, enc]);
  t.is(d.code, 0, d.stderr);
  t.true(d.stdout.equals(plain));
  const failing = await runCli(['decrypt', '--extpass', 'exit 3', enc]);
  t.is(failing.code, 1);
  t.regex(failing.stderr, /--extpass command exited with status 3/);
  const both = await runCli(['decrypt', '--extpass', 'true', '--passfile', pf, enc]);
  t.is(both.code, 2);
  const missing = await runCli(['decrypt', '--passfile', path.join(dir, 'nope'), enc]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /cannot read --passfile \S*nope: no such file or directory/);
});

test('without a password source and no terminal: exit 2 and a clear message; the password never shows', async (t) => {
  const dir = tempDir(t);
  const input = writeFile(dir, 'plain', 'hello');
  const r = await runCli(['encrypt', input, path.join(dir, 'out')]);
  t.is(r.code, 2);
  t.regex(r.stderr, /no password: use --passfile, --extpass or DAREFS_PASSWORD/);
  t.false(fs.existsSync(path.join(dir, 'out')));
  // A wrong password, even with DAREFS_DEBUG=1 (stack traces), is never echoed back.
  const enc = path.join(dir, 'enc');
  t.is((await runCli(['encrypt', input, enc], { env: { DAREFS_PASSWORD: PW } })).code, 0);
  const wrong = 'a-wrong-password-that-must-not-leak';
  const d = await runCli(['decrypt', enc, path.join(dir, 'o')], { env: { DAREFS_PASSWORD: wrong, DAREFS_DEBUG: '1' } });
  t.is(d.code, 3);
  t.false(d.stderr.includes(wrong) || d.stdout.includes(wrong));
  t.regex(d.stderr, /wrong password or key \(or package 0 of \S*enc is corrupted\)/);
});

// ---- output rules ----

test('an existing OUT is refused without --force and replaced with it; IN = OUT is refused', async (t) => {
  const dir = tempDir(t);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  const input = writeFile(dir, 'plain', 'some text');
  const out = writeFile(dir, 'out', 'precious');
  const r = await runCli(['encrypt', '--keyfile', keyfile, input, out]);
  t.is(r.code, 1);
  t.regex(r.stderr, /output \S*out already exists: use --force to overwrite it/);
  t.is(fs.readFileSync(out, 'utf8'), 'precious');
  const f = await runCli(['encrypt', '-f', '--keyfile', keyfile, input, out]);
  t.is(f.code, 0, f.stderr);
  t.is(fs.statSync(out).size, 32 + 32 + 9);
  const same = await runCli(['encrypt', '--force', '--keyfile', keyfile, input, input]);
  t.is(same.code, 2);
  t.is(fs.readFileSync(input, 'utf8'), 'some text');
});

test('a failed decrypt with --force removes OUT (no partial plaintext is left); a wrong key leaves OUT untouched', async (t) => {
  const dir = tempDir(t);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  const plain = testBytes(3 * 65536, 4);
  const enc = path.join(dir, 'enc');
  t.is((await runCli(['encrypt', '--keyfile', keyfile, writeFile(dir, 'plain', plain), enc])).code, 0);
  const bytes = fs.readFileSync(enc);
  bytes[32 + 2 * 65568 + 100] ^= 1; // package 2's ciphertext
  fs.writeFileSync(enc, bytes);
  const out = writeFile(dir, 'out', 'old content');
  // A wrong key fails at package 0, before any output: OUT is not even opened.
  const wrongKey = writeFile(dir, 'wrong', MASTER_KEY_HEX.replace(/^00/, 'ee'));
  const early = await runCli(['decrypt', '--force', '--keyfile', wrongKey, enc, out]);
  t.is(early.code, 3);
  t.is(fs.readFileSync(out, 'utf8'), 'old content');
  // Package 2 fails after packages 0 and 1 were written: OUT is removed.
  const r = await runCli(['decrypt', '--force', '--keyfile', keyfile, enc, out]);
  t.is(r.code, 6);
  t.regex(r.stderr, /authentication failed in package 2 of \S*enc: wrong password or key, or the file was modified/);
  t.false(fs.existsSync(out));
});

test('Ctrl-C (SIGINT) during a run removes OUT and exits 130', async (t) => {
  const dir = tempDir(t);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  const out = path.join(dir, 'out.enc');
  const child = spawn(process.execPath, [MAIN, 'encrypt', '--keyfile', keyfile, '-', out], { env: childEnv(), stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  // Feed until OUT exists (it is created at the first package), then interrupt.
  const deadline = Date.now() + 20_000;
  while (!fs.existsSync(out) && Date.now() < deadline) {
    child.stdin.write(testBytes(65536, 1));
    await new Promise((r) => setTimeout(r, 20));
  }
  t.true(fs.existsSync(out), 'output was being written');
  child.kill('SIGINT');
  const code = await exited;
  t.is(code, 130, stderr);
  t.regex(stderr, /darefs: encrypt: interrupted/);
  t.false(fs.existsSync(out));
});

test('contradictory key options are usage errors (exit 2) before anything is read', async (t) => {
  const dir = tempDir(t);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  for (const args of [
    ['encrypt', '--ncrypt', '--keyfile', keyfile],
    ['encrypt', '--kdf', 'hkdf-sha256'],
    ['decrypt', '--keyfile', keyfile, '--passfile', keyfile],
    ['encrypt', '--dare-version', '3'],
    ['decrypt', 'a', 'b', 'c'],
  ]) {
    const r = await runCli(args, { env: { DAREFS_PASSWORD: PW } });
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, /Run 'darefs (en|de)crypt --help' for usage/);
  }
});

test('a missing input names the path (exit 1); a malformed key file is exit 3', async (t) => {
  const dir = tempDir(t);
  const r = await runCli(['decrypt', path.join(dir, 'missing.enc'), path.join(dir, 'out')], { env: { DAREFS_PASSWORD: PW } });
  t.is(r.code, 1);
  t.regex(r.stderr, /^darefs: decrypt: cannot open input \S*missing\.enc: no such file or directory \(ENOENT\)\n$/);
  const bad = writeFile(dir, 'bad.key', 'not a key');
  const k = await runCli(['encrypt', '--keyfile', bad]);
  t.is(k.code, 3);
  t.regex(k.stderr, /key file \S*bad\.key must hold exactly 32 raw bytes or 64 hex characters/);
});

test('decrypt --force into an existing world-readable file leaves it 0600, as a new OUT is', async (t) => {
  const dir = tempDir(t);
  const keyfile = writeFile(dir, 'k', MASTER_KEY_HEX);
  const enc = path.join(dir, 'enc');
  t.is((await runCli(['encrypt', '--keyfile', keyfile, writeFile(dir, 'plain', 'secret plaintext\n'), enc])).code, 0);
  for (const old of [0o644, 0o666, 0o4755, 0o000]) {
    const out = writeFile(dir, `out-${old.toString(8)}`, 'old content');
    fs.chmodSync(out, old);
    const r = await runCli(['decrypt', '--force', '--keyfile', keyfile, enc, out]);
    t.is(r.code, 0, r.stderr);
    t.is(fs.readFileSync(out, 'utf8'), 'secret plaintext\n');
    t.is(fs.statSync(out).mode & 0o7777, 0o600, `was ${old.toString(8)}`);
  }
  const fresh = path.join(dir, 'fresh');
  t.is((await runCli(['decrypt', '--keyfile', keyfile, enc, fresh])).code, 0);
  t.is(fs.statSync(fresh).mode & 0o7777, 0o600);
  // encrypt keeps its own rule (0666 less the umask): only decrypt forces 0600.
  const encOut = writeFile(dir, 'enc-out', 'x');
  fs.chmodSync(encOut, 0o644);
  t.is((await runCli(['encrypt', '--force', '--keyfile', keyfile, writeFile(dir, 'p2', 'y'), encOut])).code, 0);
  t.is(fs.statSync(encOut).mode & 0o7777, 0o644);
});

test('decrypt --volume --path: a file by its plaintext path, encrypted names mapped (and plain ones); a cipher file path still works; the errors name both paths', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const pass = writeFile(dir, 'pass', `${PW}\n`);
  const vault = path.join(dir, 'vault');
  t.is((await runCli(['init', '--encrypt-names', '--passfile', pass, vault])).code, 0);
  const plain = path.join(dir, 'plain');
  const long = 'n'.repeat(230);
  fs.mkdirSync(path.join(plain, 'docs'), { recursive: true });
  const report = testBytes(70_000, 11);
  fs.writeFileSync(path.join(plain, 'docs', 'report.pdf'), report);
  fs.writeFileSync(path.join(plain, 'docs', long), 'long named');
  const imp = await runCli(['import', '--passfile', pass, plain, vault]);
  t.is(imp.code, 0, imp.stderr);
  const keys = await volumeNameKeys(vault, PW);
  const cipherOf = (...names: string[]): string => path.join(vault, ...names.map((n) => entryOf(keys, n)));

  const out = path.join(dir, 'report.pdf');
  const r = await runCli(['decrypt', '--volume', vault, '--passfile', pass, '--path', 'docs/report.pdf', out]);
  t.is(r.code, 0, r.stderr);
  t.true(fs.readFileSync(out).equals(report));
  t.is(fs.statSync(out).mode & 0o777, 0o600);
  const viaLong = await runCli(['decrypt', '--volume', vault, '--passfile', pass, '--path', `./docs//${long}`]);
  t.is(viaLong.code, 0, viaLong.stderr);
  t.is(viaLong.stdout.toString(), 'long named', 'a long name, to standard output; the path normalized');
  // The cipher file by its own path, as before.
  const byCipher = await runCli(['decrypt', '--volume', vault, '--passfile', pass, cipherOf('docs', 'report.pdf')]);
  t.is(byCipher.code, 0, byCipher.stderr);
  t.true(byCipher.stdout.equals(report));
  // A 0-byte cipher file is an empty file of the plaintext view (created and never written).
  fs.writeFileSync(cipherOf('touched'), '');
  const empty = await runCli(['decrypt', '--volume', vault, '--passfile', pass, '--path', 'touched']);
  t.is(empty.code, 0, empty.stderr);
  t.is(empty.stdout.length, 0);

  const missing = await runCli(['decrypt', '--volume', vault, '--passfile', pass, '--path', 'docs/missing.pdf', path.join(dir, 'm')]);
  t.is(missing.code, 1, missing.stderr);
  t.is(missing.stderr, `darefs: decrypt: docs/missing.pdf does not exist in the volume ${vault}: there is no ${cipherOf('docs', 'missing.pdf')}\n`);
  t.false(fs.existsSync(path.join(dir, 'm')));
  const isDir = await runCli(['decrypt', '--volume', vault, '--passfile', pass, '--path', 'docs']);
  t.is(isDir.code, 1, isDir.stderr);
  t.regex(isDir.stderr, new RegExp(`docs in the volume \\S+ \\(cipher path ${cipherOf('docs')}\\) is a directory`));
  const wrong = writeFile(dir, 'wrong', 'not the passphrase\n');
  const bad = await runCli(['decrypt', '--volume', vault, '--passfile', wrong, '--path', 'docs/report.pdf', path.join(dir, 'w')]);
  t.is(bad.code, 3, bad.stderr);
  t.false(fs.existsSync(path.join(dir, 'w')));

  for (const [args, why] of [
    [['--path', 'docs/report.pdf'], /--path needs --volume CIPHERDIR/],
    [['--volume', vault, '--path', '../vault/docs'], /--path \.\.\/vault\/docs has a '\.\.' component/],
    [['--volume', vault, '--path', 'docs/../../x'], /has a '\.\.' component/],
    [['--volume', vault, '--path', path.join(vault, 'docs')], /is absolute/],
    [['--volume', vault, '--path', './'], /names the root of the volume, not a file/],
    [['--volume', vault, '--path', 'docs/report.pdf', 'in', 'out'], /unexpected argument 'out'/],
  ] as const) {
    const u = await runCli(['decrypt', '--passfile', pass, ...args]);
    t.is(u.code, 2, `${args.join(' ')}: ${u.stderr}`);
    t.regex(u.stderr, why);
    t.regex(u.stderr, /Run 'darefs decrypt --help' for usage/);
  }

  // Plain names: the same path is the cipher path; darefs's own files are not in the view.
  const cipher = path.join(dir, 'cipher');
  t.is((await runCli(['init', '--passfile', pass, cipher])).code, 0);
  t.is((await runCli(['import', '--passfile', pass, plain, cipher])).code, 0);
  const p = await runCli(['decrypt', '--volume', cipher, '--passfile', pass, '--path', 'docs/report.pdf']);
  t.is(p.code, 0, p.stderr);
  t.true(p.stdout.equals(report));
  const own = await runCli(['decrypt', '--volume', cipher, '--passfile', pass, '--path', '.darefs/config.json']);
  t.is(own.code, 1, own.stderr);
  t.regex(own.stderr, /\.darefs\/config\.json is not in the plaintext view of \S+: \.darefs and temporary files are darefs's own/);
});

test('decrypt --path never follows a symlink in the cipher directory', async (t) => {
  const dir = tempDir(t);
  const pass = writeFile(dir, 'pass', `${PW}\n`);
  const vault = path.join(dir, 'vault');
  t.is((await runCli(['init', '--encrypt-names', '--passfile', pass, vault])).code, 0);
  const keys = await volumeNameKeys(vault, PW);
  // A real cipher file of this volume outside it, and a directory symlink planted where docs/ goes.
  const outside = path.join(dir, 'outside');
  fs.mkdirSync(outside);
  const enc = await runCli(['encrypt', '--volume', vault, '--passfile', pass, writeFile(dir, 'p', 'stolen'), path.join(outside, entryOf(keys, 'a'))]);
  t.is(enc.code, 0, enc.stderr);
  fs.symlinkSync(outside, path.join(vault, entryOf(keys, 'docs')));
  fs.symlinkSync(path.join(outside, entryOf(keys, 'a')), path.join(vault, entryOf(keys, 'link')));
  const through = await runCli(['decrypt', '--volume', vault, '--passfile', pass, '--path', 'docs/a']);
  t.is(through.code, 1, through.stderr);
  t.regex(through.stderr, /cannot open docs\/a in the volume .* goes through a symlink or out of the cipher directory/);
  t.is(through.stdout.length, 0);
  const link = await runCli(['decrypt', '--volume', vault, '--passfile', pass, '--path', 'link']);
  t.is(link.code, 1, link.stderr);
  t.regex(link.stderr, /link in the volume .* is a symlink/);
  t.is(link.stdout.length, 0);
});
