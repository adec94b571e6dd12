/**
 * `darefs fsck` (issue 5) on real volumes made by `darefs init`, and the mount's side of a torn
 * package: with its journal entry the mount (or fsck --repair) replays it and says so in one log
 * line; without one fsck names the file and the package, and the mount answers EIO for that
 * package's range only.
 */
import test, { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Cipher, MAX_PAYLOAD, Version, encryptStream, packageOffset, randomNonce, sealPackage } from '../src/dare';
import { CONFIG_DIR } from '../src/keys';
import { TEMP_PREFIX } from '../src/store';
import { CLI, passfile, writeNcryptFile, writePassfile } from './helpers/darefs';
import { MountDirs, assertNoFuseMountsLeft, cleanupLeftovers, makeTestDirs, sleep, withMount } from './helpers/mount';
import { KeyFor, RunResult, decryptCipherFile, initMasterVolume, masterMount, run, sha256, stopCleanly, volumeJournal, volumeKeys, withMasterMount } from './helpers/rw';

const P = MAX_PAYLOAD;

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

function fsck(dirs: MountDirs, ...args: string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, 'fsck', '--passfile', passfile(dirs), ...args, dirs.cipherDir], { timeoutMs: 60_000 });
}

interface FsckJson {
  clean: boolean;
  journal: { pendingPackages: number; pendingFiles: string[]; replayedPackages: number; replayedFiles: string[]; discarded: boolean; torn: boolean };
  counts: { files: number; ok: number; bad: number; packages: number; badPackages: number; temp: number };
  files: Array<{ path: string; status: string; problems: Array<{ index: number; error: string }>; removed?: boolean; repaired?: boolean }>;
}

async function fsckJson(t: ExecutionContext, dirs: MountDirs, ...args: string[]): Promise<{ code: number | null; report: FsckJson }> {
  const res = await fsck(dirs, '--json', ...args);
  try {
    return { code: res.code, report: JSON.parse(res.stdout) as FsckJson };
  } catch {
    t.log(res.stdout, res.stderr);
    throw new Error(`fsck --json printed no JSON (exit ${String(res.code)})`);
  }
}

/** A cipher file of `plain` under the volume's keys, as the streaming encoder writes it. */
async function sealFile(keyFor: KeyFor, plain: Buffer, version = Version.V10): Promise<Buffer> {
  const prefix = randomBytes(32);
  const parts: Buffer[] = [prefix];
  for await (const p of encryptStream([plain], keyFor(prefix), { version, cipher: Cipher.AES_256_GCM })) parts.push(p);
  return Buffer.concat(parts);
}

/** A new sealed image of package `index` of a 1.0 cipher file, holding `plain`. */
function reseal(keyFor: KeyFor, raw: Buffer, index: number, plain: Buffer): Buffer {
  return sealPackage(keyFor(raw.subarray(0, 32)), { version: Version.V10, cipher: Cipher.AES_256_GCM, index, nonce: randomNonce(Version.V10), final: false }, plain);
}

/**
 * f.bin: 6 packages; package 3 torn (the first half of a new image over the old one). With
 * `journaled`, the journal holds that new image, as a crash after its commit leaves it.
 */
async function tornVolume(dirs: MountDirs, journaled: boolean): Promise<{ before: Buffer; after: Buffer }> {
  await initMasterVolume(dirs);
  const keyFor = await volumeKeys(dirs.cipherDir);
  const before = randomBytes(5 * P + 1234);
  const raw = await sealFile(keyFor, before);
  const after = Buffer.from(before);
  const patch = randomBytes(P);
  patch.copy(after, 3 * P);
  const image = reseal(keyFor, raw, 3, patch);
  if (journaled) {
    const j = await volumeJournal(dirs.cipherDir);
    try {
      j.journal.commit([{ path: 'f.bin', prefix: raw.subarray(0, 32), writes: [{ offset: packageOffset(3), bytes: image }], size: raw.length }]);
    } finally {
      j.close();
    }
  }
  image.subarray(0, image.length >> 1).copy(raw, packageOffset(3));
  await fsp.writeFile(path.join(dirs.cipherDir, 'f.bin'), raw);
  return { before, after };
}

async function readAt(file: string, position: number, length: number): Promise<Buffer | string> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, position);
    return buf.subarray(0, bytesRead);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  } finally {
    await fh.close();
  }
}

test.serial('a clean volume: exit 0, JSON counts; refused while mounted unless --force; --repair never on a mounted volume', async (t) => {
  await withMasterMount(t, async (m) => {
    await fsp.mkdir(path.join(m.mountpoint, 'sub'));
    await fsp.writeFile(path.join(m.mountpoint, 'a.bin'), randomBytes(3 * P + 17));
    await fsp.writeFile(path.join(m.mountpoint, 'sub', 'b.txt'), 'hello');
    await fsp.writeFile(path.join(m.mountpoint, 'empty'), '');
    // Closed files' packages wait in the journal for the next checkpoint (--commit 0.2 s below).
    await sleep(600);
    const mounted = await fsck(m);
    t.is(mounted.code, 1, mounted.stderr);
    t.regex(mounted.stderr, /is mounted on .*unmount it first/);
    const forced = await fsck(m, '--force');
    t.is(forced.code, 0, forced.stdout + forced.stderr);
    t.is((await fsck(m, '--force', '--repair')).code, 2);
    await stopCleanly(t, m);
    const { code, report } = await fsckJson(t, m);
    t.is(code, 0);
    t.true(report.clean);
    t.like(report.counts, { files: 3, ok: 3, bad: 0, packages: 5, badPackages: 0, temp: 0 });
    t.deepEqual(report.files.map((f) => [f.path, f.status]), [['a.bin', 'ok'], ['empty', 'ok'], ['sub/b.txt', 'ok']]);
    const text = await fsck(m);
    t.is(text.code, 0);
    t.regex(text.stdout, /checked 3 files \(5 packages, .*\): 3 ok/);
  }, { extra: () => ['--commit', '0.2'] });
});

test.serial('every kind of problem is named by file (and package); --repair only removes temporary files and empties files shorter than a prefix', async (t) => {
  const dirs = await makeTestDirs();
  t.teardown(() => fsp.rm(dirs.root, { recursive: true, force: true }));
  await initMasterVolume(dirs);
  const keyFor = await volumeKeys(dirs.cipherDir);
  const c = dirs.cipherDir;
  await fsp.mkdir(path.join(c, 'sub'));
  await fsp.writeFile(path.join(c, 'good.bin'), await sealFile(keyFor, randomBytes(2 * P + 5)));
  await fsp.writeFile(path.join(c, 'sub', 'v2.bin'), await sealFile(keyFor, randomBytes(P + 5), Version.V20));
  const torn = await sealFile(keyFor, randomBytes(4 * P));
  const image = reseal(keyFor, torn, 2, randomBytes(P));
  image.subarray(0, image.length >> 1).copy(torn, packageOffset(2));
  await fsp.writeFile(path.join(c, 'torn.bin'), torn);
  await fsp.writeFile(path.join(c, 'short.bin'), randomBytes(10));
  const cut = await sealFile(keyFor, randomBytes(P + 100));
  await fsp.writeFile(path.join(c, 'cut.bin'), cut.subarray(0, cut.length - 110));
  await fsp.writeFile(path.join(c, 'foreign.txt'), 'just some text, not a DARE stream at all\n'.repeat(30));
  // A 1.0 stream with a short middle package: valid for streaming decryption only.
  const prefix = randomBytes(32);
  const key = keyFor(prefix);
  const seal = (index: number, n: number): Buffer => sealPackage(key, { version: Version.V10, cipher: Cipher.AES_256_GCM, index, nonce: randomNonce(Version.V10), final: false }, randomBytes(n));
  await fsp.writeFile(path.join(c, 'irregular.bin'), Buffer.concat([prefix, seal(0, 1000), seal(1, 500)]));
  // Another volume's file: no package authenticates.
  const alien = await sealFile(() => randomBytes(32), randomBytes(3 * P));
  await fsp.writeFile(path.join(c, 'alien.bin'), alien);
  await fsp.writeFile(path.join(c, 'sub', `${TEMP_PREFIX}0123abcd`), randomBytes(40));
  const before = new Map<string, string>();
  for (const name of ['good.bin', 'torn.bin', 'cut.bin', 'short.bin', 'foreign.txt', 'irregular.bin', 'alien.bin']) before.set(name, sha256(await fsp.readFile(path.join(c, name))));

  const { code, report } = await fsckJson(t, dirs);
  t.is(code, 6, 'damaged files: exit 6');
  t.false(report.clean);
  const by = new Map(report.files.map((f) => [f.path, f]));
  t.is(by.get('good.bin')?.status, 'ok');
  t.is(by.get('sub/v2.bin')?.status, 'ok');
  t.is(by.get('torn.bin')?.status, 'damaged');
  t.deepEqual(by.get('torn.bin')?.problems.map((p) => [p.index, p.error]), [[2, 'AuthenticationError']]);
  t.is(by.get('short.bin')?.status, 'short');
  t.is(by.get('cut.bin')?.status, 'invalid-length');
  t.is(by.get('foreign.txt')?.status, 'foreign');
  t.is(by.get('irregular.bin')?.status, 'irregular');
  t.is(by.get('alien.bin')?.status, 'damaged');
  t.deepEqual(by.get('alien.bin')?.problems.map((p) => p.index), [0, 1, 2]);
  t.is(by.get(`sub/${TEMP_PREFIX}0123abcd`)?.status, 'temp');
  t.like(report.counts, { files: 8, ok: 2, bad: 6, temp: 1 });

  const text = await fsck(dirs);
  t.is(text.code, 6);
  t.regex(text.stdout, /^torn\.bin: DAMAGED: 1 of 4 packages failed: package 2 \(authentication failed\)$/m);
  t.regex(text.stdout, /^alien\.bin: DAMAGED: no package authenticates/m);
  t.regex(text.stdout, /^cut\.bin: INVALID LENGTH: /m);
  t.regex(text.stdout, /^short\.bin: TOO SHORT: /m);
  t.regex(text.stdout, /^foreign\.txt: NOT DARE: /m);
  t.regex(text.stdout, /^irregular\.bin: IRREGULAR: /m);
  t.regex(text.stdout, /TEMPORARY FILE: .*run with --repair to remove it/);
  t.regex(text.stderr, /6 files have problems; 1 leftover temporary file \(listed above\): run with --repair/);

  const repaired = await fsckJson(t, dirs, '--repair');
  t.is(repaired.code, 6, 'still damaged: --repair guesses nothing');
  t.true(repaired.report.files.find((f) => f.status === 'temp')?.removed);
  t.false(fs.existsSync(path.join(c, 'sub', `${TEMP_PREFIX}0123abcd`)));
  // Less than a prefix holds no content: --repair makes it an empty file, and touches nothing else.
  t.like(repaired.report.files.find((f) => f.path === 'short.bin'), { status: 'empty', repaired: true });
  t.is(fs.statSync(path.join(c, 'short.bin')).size, 0);
  before.delete('short.bin');
  for (const [name, digest] of before) t.is(sha256(await fsp.readFile(path.join(c, name))), digest, `${name} untouched`);
});

test.serial('a 0-byte cipher file (a create whose prefix a crash lost): fsck notes it (exit 0); the mount shows an empty file that takes writes', async (t) => {
  await withMount(
    t,
    masterMount(),
    async (m) => {
      const file = path.join(m.mountpoint, 'zero.bin');
      t.is((await fsp.stat(file)).size, 0);
      t.is((await fsp.readFile(file)).length, 0, 'reads as empty, not EIO');
      t.notRegex(m.output(), /zero\.bin/, 'nothing logged about it');
      await fsp.appendFile(file, 'now it has content');
      t.is((await fsp.readFile(file)).toString(), 'now it has content');
      await stopCleanly(t, m);
      const after = await fsckJson(t, m);
      t.is(after.code, 0);
      t.deepEqual(after.report.files.map((f) => [f.path, f.status]), [['zero.bin', 'ok']]);
    },
    {
      setup: async (dirs) => {
        await initMasterVolume(dirs);
        await fsp.writeFile(path.join(dirs.cipherDir, 'zero.bin'), '');
        const { code, report } = await fsckJson(t, dirs);
        t.is(code, 0, 'information, not damage');
        t.true(report.clean);
        t.deepEqual(report.files.map((f) => [f.path, f.status]), [['zero.bin', 'empty']]);
        t.regex((await fsck(dirs)).stdout, /^zero\.bin: EMPTY \(information\): 0 bytes, no prefix yet/m);
      },
    },
  );
});

test.serial('a torn package with its journal entry: fsck reports the pending batch; the mount replays it (one log line) and reads the new version', async (t) => {
  let versions: { before: Buffer; after: Buffer } | undefined;
  let pending: { code: number | null; report: FsckJson } | undefined;
  await withMount(
    t,
    masterMount(),
    async (m) => {
      t.regex(m.output(), /replayed 1 package of 1 file from the journal after an unclean shutdown/);
      t.is(m.output().match(/from the journal/g)?.length, 1, 'one line');
      const got = await fsp.readFile(path.join(m.mountpoint, 'f.bin'));
      t.true(got.equals(versions!.after), 'package 3 holds the new version, the others are unchanged');
      await stopCleanly(t, m);
      const { code, report } = await fsckJson(t, m);
      t.is(code, 0);
      t.like(report.journal, { pendingPackages: 0, torn: false });
    },
    {
      setup: async (dirs) => {
        versions = await tornVolume(dirs, true);
        pending = await fsckJson(t, dirs);
        const text = await fsck(dirs);
        t.regex(text.stdout, /journal: has 1 pending packages of 1 files \(f\.bin\).*run with --repair/);
        t.regex(text.stdout, /^f\.bin: DAMAGED: 1 of 6 packages failed: package 3 .*\(the pending journal batch covers this file\)$/m);
      },
    },
  );
  t.like(pending!.report.journal, { pendingPackages: 1, pendingFiles: ['f.bin'] });
  t.not(pending!.code, 0, 'a pending journal is not "all well"');
});

test.serial('a torn package with its journal entry: fsck --repair replays it and then finds all well', async (t) => {
  const dirs = await makeTestDirs();
  t.teardown(() => fsp.rm(dirs.root, { recursive: true, force: true }));
  const { after } = await tornVolume(dirs, true);
  const res = await fsck(dirs, '--repair');
  t.is(res.code, 0, res.stdout + res.stderr);
  t.regex(res.stdout, /journal: replayed 1 packages of 1 files \(f\.bin\)/);
  t.true((await decryptCipherFile(await volumeKeys(dirs.cipherDir), path.join(dirs.cipherDir, 'f.bin'))).equals(after));
  const j = await volumeJournal(dirs.cipherDir);
  t.teardown(() => j.close());
  t.deepEqual(j.journal.inspect(), { packages: 0, files: [], torn: false });
});

test.serial('a torn package without a journal entry: fsck names file and package; the mount gives EIO for that package only', async (t) => {
  let versions: { before: Buffer; after: Buffer } | undefined;
  await withMount(
    t,
    masterMount(),
    async (m) => {
      const file = path.join(m.mountpoint, 'f.bin');
      const before = versions!.before;
      t.is(await readAt(file, 3 * P + 100, 1000), 'EIO', 'the torn package');
      // A read that reaches into it gets EIO, or (the kernel reads page by page) only the bytes before it.
      const across = await readAt(file, 3 * P - 10, 100);
      t.true(across === 'EIO' || (Buffer.isBuffer(across) && across.length <= 10 && across.equals(before.subarray(3 * P - 10, 3 * P - 10 + across.length))), String(across));
      t.deepEqual(await readAt(file, 0, 4096), before.subarray(0, 4096), 'package 0');
      t.deepEqual(await readAt(file, 5 * P, 1234), before.subarray(5 * P), 'package 5');
      t.deepEqual(await readAt(file, 4 * P + 7, 1000), before.subarray(4 * P + 7, 4 * P + 1007), 'package 4');
      t.regex(m.output(), /authentication failed in package 3 of \/f\.bin/);
      t.notRegex(m.output(), /from the journal/);
      await stopCleanly(t, m);
    },
    {
      setup: async (dirs) => {
        versions = await tornVolume(dirs, false);
        const text = await fsck(dirs);
        t.is(text.code, 6);
        t.regex(text.stdout, /^f\.bin: DAMAGED: 1 of 6 packages failed: package 3 \(authentication failed\)$/m);
        const { report } = await fsckJson(t, dirs);
        t.deepEqual(report.files.map((f) => [f.path, f.status, f.problems.map((p) => p.index)]), [['f.bin', 'damaged', [3]]]);
      },
    },
  );
});

test.serial('ncrypt mode: the first journaled write makes .darefs/ (journal only); the directory stays an ncrypt directory', async (t) => {
  t.timeout(120_000);
  const plain = randomBytes(2 * P + 99);
  await withMount(
    t,
    (dirs) => ({ command: process.execPath, args: [CLI, 'mount', '-f', '--ncrypt', '--passfile', passfile(dirs), dirs.cipherDir, dirs.mountpoint] }),
    async (m) => {
      const fh = await fsp.open(path.join(m.mountpoint, 'n.bin'), 'r+');
      await fh.write(Buffer.from('changed'), 0, 7, 10);
      await fh.sync();
      await fh.close();
      Buffer.from('changed').copy(plain, 10);
      t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), ['n.bin'], '.darefs stays hidden');
      await stopCleanly(t, m);
      t.deepEqual(await fsp.readdir(path.join(m.cipherDir, CONFIG_DIR)), ['journal']);
      const again = await run(process.execPath, [CLI, 'mount', '-f', '--passfile', passfile(m), m.cipherDir, m.mountpoint], { timeoutMs: 30_000 });
      t.is(again.code, 7, 'without --ncrypt: still "not a darefs volume"');
      t.regex(again.stderr, /not a darefs volume|no .*config\.json/);
      const res = await run(process.execPath, [CLI, 'fsck', '--ncrypt', '--passfile', passfile(m), m.cipherDir], { timeoutMs: 60_000 });
      t.is(res.code, 0, res.stdout + res.stderr);
      t.regex(res.stdout, /checked 1 file \(3 packages/);
      await m.respawn();
      t.true((await fsp.readFile(path.join(m.mountpoint, 'n.bin'))).equals(plain));
      await stopCleanly(t, m);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'n.bin'), plain, Version.V10);
      },
    },
  );
});
