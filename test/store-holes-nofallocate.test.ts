/**
 * Holes without fallocate (issue 10, item 5): without the addon (DAREFS_NO_NATIVE, as on a build
 * without a compiler) there is no reservation, so a hole that does not fit runs out of space
 * part-way through its batches. The write still fails with ENOSPC and the failure path puts the
 * cipher file back byte for byte, under a journal entry while it does.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAX_PAYLOAD } from '../src/dare';
import { Volume, ZERO_BATCH, checkTree, setFaultHook } from '../src/store';
import { loadSysCalls } from '../src/sys';
import { Rng, SETTINGS_V10, masterKeys, seedFor, tmpfsDir } from './helpers/store';

// Read once, at the first call: before anything in this worker loads the addon.
process.env['DAREFS_NO_NATIVE'] = '1';

const P = MAX_PAYLOAD;

test.serial('ENOSPC part-way through a hole (no fallocate): the write fails, the cipher file is byte-identical, the journal empty', async (t) => {
  t.is(loadSysCalls().calls, undefined, 'running without the addon');
  const dir = tmpfsDir(t, '24m');
  if (dir === undefined) return t.pass();
  const rng = new Rng(seedFor(0x401e0101));
  const mk = masterKeys(rng.bytes(32));
  const vol = new Volume({ keys: mk.keys, settings: SETTINGS_V10, readOnly: false, packageCacheBytes: 16 << 20, dirtyBytes: 8 << 20, cipherDir: dir });
  const file = path.join(dir, 'f.bin');
  const f = await vol.create(file, 'f.bin', 0o600);
  const content = rng.bytes(3 * P + 4321);
  let calls = 0;
  try {
    await f.write(0, content);
    await f.flush('full');
    // In place (a flush leaves it in the journal until a checkpoint).
    vol.checkpoint();
    const before = fs.readFileSync(file);
    // Count the writes to the cipher file: the hole's batches must have started to go out.
    setFaultHook((op) => {
      if (op.path === file && (op.kind === 'writev' || op.kind === 'write')) calls++;
      return 'ok';
    });
    await t.throwsAsync(f.write(64 << 20, Buffer.from('x')), { code: 'ENOSPC' });
    t.true(calls > 2, `${calls} writes to the cipher file before the disk was full`);
    t.true(fs.readFileSync(file).equals(before), 'cipher file byte-identical after the failed write');
    t.is(f.size, content.length);
    t.true((await f.read(0, content.length + 1)).equals(content));
    // The record that put the file back stays until the next checkpoint retires it.
    vol.checkpoint();
    const left = vol.inspectJournal();
    t.deepEqual(left, { packages: 0, files: [], torn: false }, 'journal empty');
    await f.truncate(content.length + ZERO_BATCH * P);
    await f.flush('full');
  } finally {
    setFaultHook(null);
    await vol.release(f).catch(() => undefined);
    vol.close();
  }
  t.is((await checkTree({ root: dir, key: mk.keys.key })).counts.bad, 0);
});
