/**
 * Group commit through a real mount (issue 12): what closed files wrote survives a kill -9 of
 * the daemon without any fsync (it is in the journal, in the page cache); a file written, closed
 * and renamed over another is in place and synced before the rename (never empty after a power
 * cut); and it all reaches its place within the --commit interval.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { MAX_PAYLOAD, cipherSize } from '../src/dare';
import { assertNoFuseMountsLeft, cleanupLeftovers, killAndLazyUnmount, sleep } from './helpers/mount';
import { decryptCipherFile, stopCleanly, volumeJournal, volumeKeys, withMasterMount } from './helpers/rw';

const P = MAX_PAYLOAD;

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

test.serial('kill -9 after files were written and closed (no fsync): the next mount replays them, nothing lost', async (t) => {
  await withMasterMount(
    t,
    async (m) => {
      const files = new Map<string, Buffer>();
      await fsp.mkdir(path.join(m.mountpoint, 'd'));
      for (let i = 0; i < 30; i++) {
        const data = randomBytes(1 + ((i * 7919) % (3 * P)));
        files.set(`d/f${i}`, data);
        await fsp.writeFile(path.join(m.mountpoint, 'd', `f${i}`), data);
      }
      // An overwrite in the middle of a closed file, too.
      const patch = randomBytes(5000);
      const fh = await fsp.open(path.join(m.mountpoint, 'd', 'f29'), 'r+');
      await fh.write(patch, 0, patch.length, 1000);
      await fh.close();
      patch.copy(files.get('d/f29')!, 1000);
      await m.kill9();
      await killAndLazyUnmount(-1, m.mountpoint);
      // The journal holds them (no checkpoint ran: --commit 0).
      const j = await volumeJournal(m.cipherDir);
      const pending = j.journal.inspect();
      j.close();
      t.true(pending.files.length >= 30, `the journal names ${pending.files.length} files`);
      await m.respawn();
      t.regex(m.output(), /replayed \d+ packages? of 30 files from the journal/);
      for (const [name, data] of files) t.true((await fsp.readFile(path.join(m.mountpoint, name))).equals(data), name);
      await stopCleanly(t, m);
    },
    { extra: () => ['--commit', '0'] },
  );
});

test.serial('write a new file, close, rename it over the old one: the new content is in place and synced before the rename', async (t) => {
  await withMasterMount(
    t,
    async (m) => {
      const target = path.join(m.mountpoint, 'config');
      await fsp.writeFile(target, 'old content');
      const fresh = randomBytes(2 * P + 123);
      await fsp.writeFile(`${target}.tmp`, fresh);
      await fsp.rename(`${target}.tmp`, target);
      // No checkpoint timer (--commit 0): only the rename put it there.
      const cipher = path.join(m.cipherDir, 'config');
      t.is(fs.statSync(cipher).size, cipherSize(fresh.length), 'in place under its new name');
      t.true((await decryptCipherFile(await volumeKeys(m.cipherDir), cipher)).equals(fresh));
      const j = await volumeJournal(m.cipherDir);
      t.deepEqual(j.journal.inspect(), { packages: 0, files: [], torn: false }, 'the journal retired');
      j.close();
      await stopCleanly(t, m);
    },
    { extra: () => ['--commit', '0'] },
  );
});

test.serial('--commit: closed files reach their place within the interval, without any fsync', async (t) => {
  await withMasterMount(
    t,
    async (m) => {
      const data = randomBytes(P + 1);
      await fsp.writeFile(path.join(m.mountpoint, 'f'), data);
      const cipher = path.join(m.cipherDir, 'f');
      t.is(fs.statSync(cipher).size, 32, 'right after close: the prefix only (the packages wait in the journal)');
      await sleep(1500);
      t.is(fs.statSync(cipher).size, cipherSize(data.length), 'after the interval: in place');
      t.true((await decryptCipherFile(await volumeKeys(m.cipherDir), cipher)).equals(data));
      await stopCleanly(t, m);
    },
    { extra: () => ['--commit', '0.5'] },
  );
});

test.serial('mtime: a close shows the new mtime at once, and a checkpoint writing the file in place later keeps it (also one set by touch -d)', async (t) => {
  t.timeout(60_000);
  await withMasterMount(
    t,
    async (m) => {
      const f = path.join(m.mountpoint, 'made');
      const g = path.join(m.mountpoint, 'stamped');
      await fsp.writeFile(f, 'first');
      await fsp.writeFile(g, 'first');
      const before = (await fsp.stat(f)).mtimeMs;
      await sleep(50);
      await fsp.writeFile(f, 'second version');
      await fsp.writeFile(g, 'second version');
      // Before any checkpoint (--commit 0.5 has not passed yet).
      const afterClose = (await fsp.stat(f)).mtimeMs;
      t.true(afterClose > before, 'mtime moved at close');
      // tar x, cp -p, rsync -t: times set after the data was written.
      await fsp.utimes(g, 1_000_000, 1_000_000);
      await sleep(1500);
      t.is((await fsp.stat(path.join(m.cipherDir, 'made'))).mtimeMs, afterClose, 'the checkpoint kept the mtime of the close');
      t.is((await fsp.stat(path.join(m.cipherDir, 'stamped'))).mtimeMs, 1_000_000_000, 'and the one touch -d set');
      t.is((await fsp.stat(g)).mtimeMs, 1_000_000_000);
      const keys = await volumeKeys(m.cipherDir);
      t.is((await decryptCipherFile(keys, path.join(m.cipherDir, 'stamped'))).toString(), 'second version', 'checkpointed in place');
    },
    { extra: () => ['--commit', '0.5'] },
  );
});
