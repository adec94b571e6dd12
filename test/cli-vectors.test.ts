/**
 * `darefs decrypt` on the reference vectors (made by sio/ncrypt): the ok ones give the exact
 * plaintext; each error one gives its exit code and a message naming the file and package,
 * and leaves no output file behind.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadManifest, vectorPath, type VectorEntry } from './helpers/vectors';
import { MASTER_KEY_HEX, runCli, tempDir, writeFile, type CliResult } from './helpers/cli';

const manifest = loadManifest();

/** Runs at most `limit` CLI processes at once: each ncrypt one needs 64 MiB for scrypt. */
function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (task) => {
    if (running >= limit) await new Promise<void>((r) => waiting.push(r));
    running++;
    try {
      return await task();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}
const limit = limiter(3);

/** Decrypts a manifest entry with the CLI: --ncrypt + DAREFS_PASSWORD, or --keyfile. */
async function decryptEntry(dir: string, e: VectorEntry, out: string): Promise<CliResult> {
  if (e.mode === 'ncrypt') {
    return limit(() => runCli(['decrypt', '--ncrypt', vectorPath(e.file), out], { env: { DAREFS_PASSWORD: e.password } }));
  }
  const keyfile = writeFile(dir, `key-${e.masterKeyHex?.slice(0, 6)}.hex`, `${e.masterKeyHex}\n`);
  return limit(() => runCli(['decrypt', '--keyfile', keyfile, vectorPath(e.file), out]));
}

// ---- ok vectors: the 65537-byte ones of every kind, and a few other sizes ----

const okEntries = manifest.filter(
  (e) => e.expect === 'ok' && (/-65537\.dare$/.test(e.file) || ['salt-only.dare', 'master-v20-aes-0.dare', 'ncrypt-v10-aes-1.dare'].includes(e.file)),
);

test('the ok vectors of 65537 bytes (1.0 and 2.0, both ciphers, both key modes) are among those tested', (t) => {
  const names = okEntries.map((e) => e.file);
  for (const f of ['ncrypt-v20-aes-65537.dare', 'ncrypt-v20-chacha-65537.dare', 'ncrypt-v10-aes-65537.dare', 'ncrypt-v10-chacha-65537.dare', 'master-v20-aes-65537.dare', 'master-v10-chacha-65537.dare']) {
    t.true(names.includes(f), f);
  }
});

for (const e of okEntries) {
  test(`decrypt ${e.file} (${e.mode}) gives ${e.plaintext}`, async (t) => {
    const dir = tempDir(t);
    const out = path.join(dir, 'plain');
    const r = await decryptEntry(dir, e, out);
    t.is(r.code, 0, r.stderr);
    t.is(r.stderr, '');
    t.true(fs.readFileSync(out).equals(fs.readFileSync(vectorPath(e.plaintext as string))));
    t.is(fs.statSync(out).mode & 0o777, 0o600, 'plaintext output is private');
  });
}

test('decrypt of an ok vector to standard output', async (t) => {
  const r = await runCli(['decrypt', vectorPath('ncrypt-v20-chacha-65537.dare')], { env: { DAREFS_PASSWORD: 'correct horse battery staple' } });
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.equals(fs.readFileSync(vectorPath('pt-65537.bin'))));
});

// ---- error vectors: every one, with the exit code its kind of failure gets ----

const WRONG = 3;
const NOT_DARE = 4;
const TRUNCATED = 5;
const CORRUPTED = 6;

/** Expected exit code per error vector; "wrong" entries are the wrong-password/key ones. */
const EXPECTED: Record<string, number> = {
  'neg-v20-flip-payload.dare': CORRUPTED,
  'neg-v20-flip-tag.dare': CORRUPTED,
  'neg-v20-flip-tag-last.dare': CORRUPTED,
  'neg-v20-bad-version.dare': NOT_DARE,
  'neg-v20-bad-version-pkg1.dare': CORRUPTED,
  'neg-v20-cross-version.dare': CORRUPTED,
  'neg-v20-bad-cipher.dare': NOT_DARE,
  'neg-v20-swap-pkg01.dare': WRONG, // package 0 fails authentication: indistinguishable from a wrong password
  'neg-v20-drop-pkg1.dare': CORRUPTED,
  'neg-v20-dup-pkg1.dare': CORRUPTED,
  'neg-v20-trunc-mid-pkg.dare': TRUNCATED,
  'neg-v20-trunc-in-header.dare': TRUNCATED,
  'neg-v20-trunc-boundary.dare': TRUNCATED,
  'neg-v20-trunc-last-byte.dare': TRUNCATED,
  'neg-v20-nonce-byte-pkg1.dare': CORRUPTED,
  'neg-v20-nonce-byte-pkg0.dare': WRONG,
  'neg-v20-len-field.dare': CORRUPTED,
  'neg-v20-garbage7.dare': CORRUPTED,
  'neg-v20-garbage100.dare': CORRUPTED,
  'neg-v20-dup-last-pkg.dare': CORRUPTED,
  'neg-v20-full-final-garbage7.dare': CORRUPTED,
  'neg-v20-full-final-clear-flag.dare': CORRUPTED,
  'neg-v10-flip-payload.dare': CORRUPTED,
  'neg-v10-flip-tag.dare': CORRUPTED,
  'neg-v10-flip-tag-last.dare': CORRUPTED,
  'neg-v10-bad-version.dare': NOT_DARE,
  'neg-v10-bad-version-pkg1.dare': CORRUPTED,
  'neg-v10-cross-version.dare': WRONG,
  'neg-v10-bad-cipher.dare': NOT_DARE,
  'neg-v10-swap-pkg01.dare': CORRUPTED,
  'neg-v10-drop-pkg1.dare': CORRUPTED,
  'neg-v10-dup-pkg1.dare': CORRUPTED,
  'neg-v10-trunc-mid-pkg.dare': TRUNCATED,
  'neg-v10-trunc-in-header.dare': TRUNCATED,
  'neg-v10-trunc-last-byte.dare': TRUNCATED,
  'neg-v10-nonce-byte-pkg1.dare': CORRUPTED,
  'neg-v10-nonce-byte-pkg0.dare': WRONG,
  'neg-v10-len-field.dare': CORRUPTED,
  // A 1.0 stream has no final flag: a partial package after the last one reads as a cut stream.
  'neg-v10-garbage7.dare': TRUNCATED,
  'neg-v10-garbage100.dare': TRUNCATED,
  'neg-v10-dup-last-pkg.dare': CORRUPTED,
  'short-prefix.dare': NOT_DARE,
  'odd-v10-seq-start-5.dare': CORRUPTED,
  'odd-v20-vary-nonce.dare': CORRUPTED,
  'odd-v20-resealed-pkg1.dare': CORRUPTED,
  'odd-v20-final-flag-pkg1.dare': CORRUPTED,
  'odd-v20-no-final.dare': CORRUPTED,
  'odd-v20-mixed-cipher.dare': CORRUPTED,
  'odd-v20-seq-start-5.dare': WRONG,
  'odd-v20-short-middle.dare': CORRUPTED,
  'odd-v20-final-first.dare': CORRUPTED,
};

function isWrongSecret(e: VectorEntry): boolean {
  return e.derivedFrom === undefined && e.file.match(/^(ncrypt|master)-/) !== null;
}

const errorEntries = manifest.filter((e) => e.expect === 'error');

/**
 * Each ncrypt run costs a scrypt (~0.2 s, 64 MiB): by default a subset covering every kind of
 * failure and each classification edge; DAREFS_CLI_ALL_VECTORS=1 runs all of them.
 */
const SUBSET = new Set([
  'neg-v20-flip-payload.dare',
  'neg-v20-flip-tag-last.dare',
  'neg-v20-bad-version.dare',
  'neg-v20-bad-version-pkg1.dare',
  'neg-v20-cross-version.dare',
  'neg-v20-bad-cipher.dare',
  'neg-v20-swap-pkg01.dare',
  'neg-v20-trunc-mid-pkg.dare',
  'neg-v20-trunc-in-header.dare',
  'neg-v20-trunc-boundary.dare',
  'neg-v20-trunc-last-byte.dare',
  'neg-v20-nonce-byte-pkg1.dare',
  'neg-v20-len-field.dare',
  'neg-v20-garbage7.dare',
  'neg-v20-dup-last-pkg.dare',
  'neg-v20-full-final-garbage7.dare',
  'neg-v10-flip-payload.dare',
  'neg-v10-bad-version.dare',
  'neg-v10-cross-version.dare',
  'neg-v10-swap-pkg01.dare',
  'neg-v10-trunc-mid-pkg.dare',
  'neg-v10-garbage7.dare',
  'short-prefix.dare',
  'odd-v20-no-final.dare',
  'odd-v20-short-middle.dare',
]);
const ALL = process.env.DAREFS_CLI_ALL_VECTORS === '1';

test('every error vector has an expected exit code', (t) => {
  for (const e of errorEntries) {
    if (!isWrongSecret(e)) t.true(e.file in EXPECTED, `${e.file} missing from EXPECTED`);
  }
  t.true(errorEntries.length >= 50);
});

for (const e of errorEntries) {
  const wrong = isWrongSecret(e);
  if (!ALL && !wrong && !SUBSET.has(e.file)) continue;
  test(`decrypt ${e.file}${wrong ? ' with a wrong key' : ''}: exit ${wrong ? WRONG : EXPECTED[e.file]}, no output left`, async (t) => {
    const dir = tempDir(t);
    const out = path.join(dir, 'plain');
    const r = await decryptEntry(dir, e, out);
    const expected = wrong ? WRONG : EXPECTED[e.file];
    t.is(r.code, expected, r.stderr);
    t.false(fs.existsSync(out), 'the output file is removed after a failure');
    t.deepEqual(fs.readdirSync(dir).filter((f) => !f.startsWith('key-')), [], 'nothing else left behind');
    t.regex(r.stderr, /^darefs: decrypt: /);
    t.true(r.stderr.includes(e.file), `message names the file: ${r.stderr}`);
    t.is(r.stderr.trim().split('\n').length, 1, 'one line, no stack trace');
    // ("wrong password" is both a vector's password and part of our message.)
    if (e.password !== undefined && e.password !== 'wrong password') t.false(r.stderr.includes(e.password), 'the password is never printed');
    if (expected !== NOT_DARE || e.file !== 'short-prefix.dare') t.regex(r.stderr, /package \d+/);
    if (expected === WRONG) t.regex(r.stderr, /wrong password or key \(or package 0 of .* is corrupted\)/);
  });
}

test('the messages of the brief: flipped payload names package 1, truncation and short prefix say what they are', async (t) => {
  const dir = tempDir(t);
  const get = (file: string): VectorEntry => manifest.find((e) => e.file === file && e.expect === 'error') as VectorEntry;
  const flip = await decryptEntry(dir, get('neg-v20-flip-payload.dare'), path.join(dir, 'a'));
  t.is(flip.code, CORRUPTED);
  t.regex(flip.stderr, /authentication failed in package 1 of \S*neg-v20-flip-payload\.dare: wrong password or key, or the file was modified/);
  const trunc = await decryptEntry(dir, get('neg-v20-trunc-boundary.dare'), path.join(dir, 'b'));
  t.is(trunc.code, TRUNCATED);
  t.regex(trunc.stderr, /package 2 of \S*neg-v20-trunc-boundary\.dare: the file is truncated/);
  const cut = await decryptEntry(dir, get('neg-v20-trunc-mid-pkg.dare'), path.join(dir, 'c'));
  t.regex(cut.stderr, /package 1 of \S*neg-v20-trunc-mid-pkg\.dare is cut short: the file is truncated/);
  const short = await decryptEntry(dir, get('short-prefix.dare'), path.join(dir, 'd'));
  t.regex(short.stderr, /short-prefix\.dare is not a DARE file: file of 20 bytes/);
});

test('to standard output only verified packages are released: a flipped package 1 gives exactly package 0', async (t) => {
  const r = await limit(() =>
    runCli(['decrypt', vectorPath('neg-v20-flip-payload.dare')], { env: { DAREFS_PASSWORD: 'correct horse battery staple' } }),
  );
  t.is(r.code, CORRUPTED);
  t.true(r.stdout.equals(fs.readFileSync(vectorPath('pt-200003.bin')).subarray(0, 65536)));
});

test('wrong master key for a master-mode vector: exit 3', async (t) => {
  const dir = tempDir(t);
  const key = writeFile(dir, 'wrong.hex', MASTER_KEY_HEX.replace(/^00/, 'ff'));
  const r = await runCli(['decrypt', '--keyfile', key, vectorPath('master-v10-chacha-65537.dare'), path.join(dir, 'out')]);
  t.is(r.code, WRONG);
  t.false(fs.existsSync(path.join(dir, 'out')));
});
