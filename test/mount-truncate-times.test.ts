/**
 * A truncate shows its new size, mtime and ctime at once, on both transports (pjdfstest
 * ftruncate/00 #15, open/00 #43-44): the attributes the kernel caches from the answer to a
 * SETATTR are the cipher inode's after the truncate, not those of a change still unsealed.
 */
import test from 'ava';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { assertNoFuseMountsLeft, cleanupLeftovers, MountContext, sleep } from './helpers/mount';
import { requirePrograms, runOk, withMasterMount } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

interface Times {
  size: number;
  mtime: bigint;
  ctime: bigint;
}

const ns = (s: string): bigint => BigInt(s.replace('.', ''));

/** stat from another process, so the answer is what the kernel has (cached) for everyone. */
async function timesOf(file: string): Promise<Times> {
  const [size, mtime, ctime] = (await runOk('stat', ['-c', '%s %.9Y %.9Z', file])).stdout.trim().split(' ');
  return { size: Number(size), mtime: ns(mtime), ctime: ns(ctime) };
}

for (const transport of ['kernel', 'fuse-native']) {
  const spec = { extra: () => ['--transport', transport] };

  test.serial(`${transport}: open(O_TRUNC), ftruncate and truncate of an open file show the new size and times at once`, async (t) => {
    t.timeout(60_000);
    await requirePrograms('stat', 'sh', 'truncate');
    await withMasterMount(
      t,
      async (m: MountContext) => {
        const f = path.join(m.mountpoint, 'f');
        await fsp.writeFile(f, 'some content to cut');

        // open(O_TRUNC) by another process (the kernel sends a SETATTR of the size, no handle).
        let before = await timesOf(f);
        await sleep(20);
        await runOk('sh', ['-c', ': > "$1"', 'sh', f]);
        let after = await timesOf(f);
        t.is(after.size, 0, 'O_TRUNC: size');
        t.true(after.mtime > before.mtime, `O_TRUNC: mtime ${before.mtime} -> ${after.mtime}`);
        t.true(after.ctime > before.ctime, `O_TRUNC: ctime ${before.ctime} -> ${after.ctime}`);

        await fsp.writeFile(f, 'some content to cut');
        const fh = await fsp.open(f, 'r+');
        try {
          // ftruncate through a handle that stays open while another process looks.
          before = await timesOf(f);
          await sleep(20);
          await fh.truncate(4);
          after = await timesOf(f);
          t.is(after.size, 4, 'ftruncate: size');
          t.true(after.mtime > before.mtime, `ftruncate: mtime ${before.mtime} -> ${after.mtime}`);
          t.true(after.ctime > before.ctime, `ftruncate: ctime ${before.ctime} -> ${after.ctime}`);

          // truncate(2) by path while this handle keeps the file open, growing it.
          before = after;
          await sleep(20);
          await runOk('truncate', ['-s', '10', f]);
          after = await timesOf(f);
          t.is(after.size, 10, 'truncate: size');
          t.true(after.mtime > before.mtime, `truncate: mtime ${before.mtime} -> ${after.mtime}`);
          t.true(after.ctime > before.ctime, `truncate: ctime ${before.ctime} -> ${after.ctime}`);
        } finally {
          await fh.close();
        }
        t.deepEqual(await fsp.readFile(f), Buffer.concat([Buffer.from('some'), Buffer.alloc(6)]));
      },
      spec,
    );
  });
}
