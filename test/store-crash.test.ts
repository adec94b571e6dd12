/**
 * Crash safety of the store (issue 5) by fault injection: a seeded random workload (writes of
 * random sizes and offsets, across package boundaries and past the end, truncates, flushes,
 * fsyncs, reopens, a create, a 2.0 file converted to 1.0) on a master-key volume with the journal
 * runs until the N-th write-type system call in the cipher directory, where the "process dies"
 * (src/store/io.ts: every later call fails too, nothing is closed cleanly, memory is lost), for
 * every N, also with that call torn in half when it writes data. Then a fresh Volume recovers
 * (journal replay, sometimes itself crashed once and run again) and:
 *   (i) every package of every file authenticates (the fsck checker, random-access rules);
 *  (ii) every file holds, package by package, a state it had since its last completed fsync (so
 *       every byte fsync'ed before the crash reads back, and no package is a mix of two
 *       states), with a size between the smallest and largest of those states; a file exists
 *       when its create returned, and never exists half made.
 * Reproduce a failure with STORE_SEED=<seed printed in the log>; CRASH_DEBUG=1 adds the candidate
 * states of a package that matches none.
 */
import test, { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAX_PAYLOAD, Version, cipherSize, packageCount, payloadLength } from '../src/dare';
import { journalKey } from '../src/keys';
import { CipherFile, FaultKind, JOURNAL_RESERVE, JournalInspection, SimulatedCrash, Volume, checkTree, setFaultHook } from '../src/store';
import { PowerCut } from './helpers/power-cut';
import { MasterKeys, Model, Rng, SETTINGS_V10, masterKeys, seedFor, tempDir, tmpfsDir, writeStreamFile } from './helpers/store';

const P = MAX_PAYLOAD;

test.afterEach.always(() => setFaultHook(null));

// ---- the workload, planned up front so every crash point runs the same operations ----

type Op =
  | { kind: 'write'; file: string; offset: number; data: Buffer }
  | { kind: 'truncate'; file: string; size: number }
  | { kind: 'flush'; file: string }
  | { kind: 'fsync'; file: string; mode: 'data' | 'full' }
  | { kind: 'reopen'; file: string }
  | { kind: 'checkpoint'; file: string }
  | { kind: 'create'; file: string };

interface PkgState {
  size: number;
  hashes: string[];
}

interface FilePlan {
  /** Content before the workload (written by the streaming encoder), or undefined: created by an op. */
  initial?: { content: Buffer; version: Version };
  /** after[k + 1]: the state after op k; after[0]: before the workload. */
  after: Array<PkgState | undefined>;
  /** Extra states op k passes through (a write past the end first extends with zeros, and a flush may happen there). */
  during: Map<number, PkgState[]>;
  /** Ops that are completed fsyncs of this file. */
  syncs: number[];
  /** Index of the create op; -1 for an initial file. */
  createdAt: number;
}

interface Plan {
  ops: Op[];
  files: Map<string, FilePlan>;
}

function snapshot(buf: Buffer): PkgState {
  const hashes: string[] = [];
  for (let i = 0; i * P < buf.length; i++) hashes.push(createHash('sha1').update(buf.subarray(i * P, Math.min(buf.length, (i + 1) * P))).digest('hex'));
  return { size: buf.length, hashes };
}

const MAX_SIZE = 6 * P;

/** An offset or size near a package boundary half of the time. */
function position(rng: Rng, limit: number): number {
  if (rng.chance(0.5)) {
    const boundary = rng.int(Math.floor(limit / P) + 1) * P;
    return Math.max(0, Math.min(limit, boundary + rng.range(-40, 40)));
  }
  return rng.int(limit + 1);
}

function makePlan(rng: Rng, steps: number): Plan {
  const files = new Map<string, FilePlan>();
  const models = new Map<string, Model>();
  const add = (name: string, initial?: FilePlan['initial']): void => {
    const m = new Model();
    if (initial) m.write(0, initial.content);
    models.set(name, m);
    files.set(name, { initial, after: [initial ? snapshot(m.data) : undefined], during: new Map(), syncs: [], createdAt: -1 });
  };
  add('a.bin', { content: rng.bytes(2 * P + 777), version: Version.V10 });
  add('b.bin', { content: rng.bytes(P + 5), version: Version.V20 });
  add('sub/c.bin');
  const ops: Op[] = [];
  const createAt = rng.range(3, Math.floor(steps / 2));
  for (let k = 0; k < steps; k++) {
    const existing = [...models.keys()].filter((n) => files.get(n)!.initial !== undefined || (files.get(n)!.createdAt >= 0 && files.get(n)!.createdAt < k));
    let op: Op;
    if (k === createAt) op = { kind: 'create', file: 'sub/c.bin' };
    else {
      const file = rng.pick(existing);
      const size = models.get(file)!.data.length;
      const r = rng.next();
      if (r < 0.5) {
        const offset = position(rng, Math.min(MAX_SIZE, size + 2 * P));
        const length = rng.chance(0.3) ? rng.range(1, 100) : rng.range(1, Math.max(1, Math.min(3 * P, MAX_SIZE - offset)));
        op = { kind: 'write', file, offset, data: rng.bytes(length) };
      } else if (r < 0.62) op = { kind: 'truncate', file, size: position(rng, Math.min(MAX_SIZE, size + P)) };
      else if (r < 0.75) op = { kind: 'flush', file };
      else if (r < 0.9) op = { kind: 'fsync', file, mode: rng.chance(0.5) ? 'data' : 'full' };
      else if (r < 0.95) op = { kind: 'checkpoint', file };
      else op = { kind: 'reopen', file };
    }
    ops.push(op);
    for (const [name, fp] of files) {
      const m = models.get(name)!;
      if (name === op.file) {
        if (op.kind === 'create') fp.createdAt = k;
        if (op.kind === 'write') {
          if (op.offset > m.data.length) {
            m.truncate(op.offset);
            fp.during.set(k, [snapshot(m.data)]);
          }
          m.write(op.offset, op.data);
        }
        if (op.kind === 'truncate') m.truncate(op.size);
        if (op.kind === 'fsync') fp.syncs.push(k);
      }
      const exists = fp.initial !== undefined || (fp.createdAt >= 0 && fp.createdAt <= k);
      const changes = name === op.file && op.kind !== 'flush' && op.kind !== 'fsync' && op.kind !== 'reopen' && op.kind !== 'checkpoint';
      fp.after.push(exists ? (changes ? snapshot(m.data) : fp.after[k] ?? snapshot(m.data)) : undefined);
    }
  }
  return { ops, files };
}

/** The states a file may be found in after a crash during op k. */
function candidates(fp: FilePlan, k: number): PkgState[] {
  const lastSync = Math.max(-1, ...fp.syncs.filter((j) => j < k));
  const from = Math.max(lastSync, fp.createdAt) + 1;
  const out: PkgState[] = [];
  for (let i = from; i <= Math.min(k + 1, fp.after.length - 1); i++) if (fp.after[i]) out.push(fp.after[i]!);
  // Also the states ops passed through: one flushed half-way may be all that reached the disk.
  for (let j = from; j <= k; j++) out.push(...(fp.during.get(j) ?? []));
  return out;
}

// ---- running it ----

interface Run {
  dir: string;
  mk: MasterKeys;
  dirtyBytes: number;
  /** Master mode's journal MAC key; without it, each record carries a MAC under its file's key (ncrypt mode). */
  journalKey?: Buffer;
}

/** What a replay would find in the journal. */
function journalOf(r: Run): JournalInspection {
  const vol = newVolume(r);
  try {
    return vol.inspectJournal()!;
  } finally {
    vol.close();
  }
}

function newVolume(r: Run): Volume {
  return new Volume({
    keys: r.mk.keys,
    settings: SETTINGS_V10,
    readOnly: false,
    packageCacheBytes: 4 * P,
    dirtyBytes: r.dirtyBytes,
    cipherDir: r.dir,
    // The volume zeroes its copy at close.
    journalKey: r.journalKey && Buffer.from(r.journalKey),
  });
}

async function setUp(r: Run, plan: Plan): Promise<void> {
  fs.rmSync(r.dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(r.dir, 'sub'), { recursive: true });
  for (const [name, fp] of plan.files) {
    if (fp.initial) await writeStreamFile(path.join(r.dir, name), fp.initial.content, r.mk, fp.initial.version);
  }
}

/** Runs the workload; returns the index of the op during which the simulated crash came, if any. */
async function runWorkload(r: Run, plan: Plan): Promise<number | undefined> {
  const vol = newVolume(r);
  const open = new Map<string, CipherFile>();
  const fileOf = async (name: string): Promise<CipherFile> => {
    let f = open.get(name);
    if (!f) open.set(name, (f = await vol.open(path.join(r.dir, name), name)));
    return f;
  };
  let k = 0;
  try {
    for (; k < plan.ops.length; k++) {
      const op = plan.ops[k];
      if (op.kind === 'create') open.set(op.file, await vol.create(path.join(r.dir, op.file), op.file, 0o600));
      else if (op.kind === 'write') await (await fileOf(op.file)).write(op.offset, op.data);
      else if (op.kind === 'truncate') await (await fileOf(op.file)).truncate(op.size);
      else if (op.kind === 'flush') await (await fileOf(op.file)).flush('none');
      else if (op.kind === 'fsync') await (await fileOf(op.file)).flush(op.mode);
      else if (op.kind === 'checkpoint') vol.checkpoint();
      else {
        const f = await fileOf(op.file);
        open.delete(op.file);
        await vol.release(f);
      }
    }
    // Op index ops.length: the last closes (they flush), and the checkpoint of the unmount.
    for (const [name, f] of [...open]) {
      open.delete(name);
      await vol.release(f);
    }
    vol.checkpoint();
  } catch (err) {
    if (!(err instanceof SimulatedCrash)) throw err;
    // The process is gone: nothing more reaches the disk (every write-type call keeps failing),
    // the descriptors are just closed.
    for (const f of open.values()) await f.close().catch(() => undefined);
    vol.close();
    return k;
  }
  vol.close();
  return undefined;
}

/** Recovers as the next mount would and checks (i) and (ii); returns a description of what is wrong. */
async function recoverAndCheck(r: Run, plan: Plan, crashedAt: number, replayCrashAt: number | undefined, power?: { model: PowerCut; rng: Rng }): Promise<string[]> {
  const problems: string[] = [];
  if (replayCrashAt !== undefined) {
    let n = 0;
    setFaultHook((op) => {
      const action = ++n === replayCrashAt ? 'crash' : 'ok';
      power?.model.observe(op, action);
      return action;
    });
    const crashing = newVolume(r);
    try {
      await crashing.recover();
    } catch (err) {
      if (!(err instanceof SimulatedCrash)) throw err;
    } finally {
      crashing.close();
    }
    // The recovery's crash was a power cut too.
    power?.model.cut(r.dir, power.rng);
  }
  setFaultHook(null);
  const vol = newVolume(r);
  const replayed = await vol.recover();
  if (replayed && (replayed.skipped.some((k) => k.benign !== true) || (replayed.discarded && !replayed.benign))) {
    problems.push(`the replay refused what the crash left: ${JSON.stringify({ skipped: replayed.skipped, reason: replayed.reason })}`);
  }
  const left = journalOf(r);
  if (left.packages > 0 || left.files.length > 0 || left.torn) problems.push(`journal not empty after recovery: ${JSON.stringify(left)}`);
  const report = await checkTree({ root: r.dir, key: r.mk.keys.key });
  for (const f of report.files) {
    // 0 bytes: a file created since its last fsync whose prefix the power cut lost (empty).
    if (f.status !== 'ok' && f.status !== 'temp' && f.status !== 'empty') problems.push(`fsck: ${f.path}: ${f.status}: ${f.message}`);
  }
  for (const [name, fp] of plan.files) {
    const file = path.join(r.dir, name);
    const exists = fs.existsSync(file);
    const mustExist = fp.createdAt < crashedAt;
    const mayExist = fp.createdAt <= crashedAt;
    if (!exists) {
      if (mustExist) problems.push(`${name}: missing`);
      continue;
    }
    if (!mayExist) {
      problems.push(`${name}: exists before its create`);
      continue;
    }
    const states = candidates(fp, crashedAt);
    let plain: Buffer;
    try {
      const cf = await vol.open(file, name);
      try {
        plain = await cf.read(0, cf.size + 1);
      } finally {
        await vol.release(cf);
      }
    } catch (err) {
      problems.push(`${name}: cannot be read: ${(err as Error).message}`);
      continue;
    }
    const onDisk = fs.statSync(file).size;
    // 0 bytes: an empty file (its prefix lost with the power cut).
    if (onDisk !== cipherSize(plain.length) && onDisk !== 0) problems.push(`${name}: cipher size does not match its plaintext`);
    const sizes = states.map((s) => s.size);
    if (plain.length < Math.min(...sizes) || plain.length > Math.max(...sizes)) {
      problems.push(`${name}: size ${plain.length} outside [${Math.min(...sizes)}, ${Math.max(...sizes)}] (lost fsync'ed data?)`);
    }
    for (let i = 0; i < packageCount(plain.length); i++) {
      const length = payloadLength(i, plain.length);
      const hash = createHash('sha1').update(plain.subarray(i * P, i * P + length)).digest('hex');
      if (!states.some((s) => payloadLength(i, s.size) === length && s.hashes[i] === hash)) {
        if (process.env.CRASH_DEBUG) problems.push(`DEBUG sizes ${JSON.stringify(states.map((s) => s.size))} hashes[${i}] ${JSON.stringify(states.map((s) => s.hashes[i]?.slice(0, 6)))} got ${hash.slice(0, 6)} size ${plain.length}; ops ${plan.ops.map((o, j) => (o.file === name ? `${j}:${describe(o)}` : '')).filter(Boolean).join(' | ')}`);
        problems.push(`${name}: package ${i} (${length} bytes) matches none of the ${states.length} states since the last fsync`);
      }
    }
  }
  vol.close();
  return problems;
}

async function crashEverywhere(t: ExecutionContext, baseSeed: number, steps: number, dirtyBytes: number, master: boolean, powerCut = false): Promise<void> {
  const seed = seedFor(baseSeed);
  t.log(`seed ${seed} (STORE_SEED=${seed} to reproduce)`);
  const rng = new Rng(seed);
  const plan = makePlan(rng, steps);
  const base = tmpfsDir(t, '64m') ?? tempDir(t, 'crash');
  const mk = masterKeys(rng.bytes(32));
  const r: Run = { dir: path.join(base, 'cipher'), mk, dirtyBytes, journalKey: master ? journalKey(mk.masterKey) : undefined };

  // A dry run counts the write-type calls (and their kinds), and checks the workload itself.
  const kinds: FaultKind[] = [];
  await setUp(r, plan);
  setFaultHook((op) => {
    kinds.push(op.kind);
    return 'ok';
  });
  t.is(await runWorkload(r, plan), undefined);
  setFaultHook(null);
  const clean = await recoverAndCheck(r, plan, plan.ops.length, undefined);
  t.deepEqual(clean, [], 'the uncrashed run ends in its last state');

  const started = Date.now();
  let runs = 0;
  let replayCrashes = 0;
  const failures: string[] = [];
  for (let n = 1; n <= kinds.length; n++) {
    for (const half of kinds[n - 1] === 'write' || kinds[n - 1] === 'writev' ? [false, true] : [false]) {
      await setUp(r, plan);
      let count = 0;
      const model = powerCut ? new PowerCut() : undefined;
      setFaultHook((op) => {
        const action = ++count === n ? (half ? 'half' : 'crash') : 'ok';
        model?.observe(op, action);
        return action;
      });
      // A crash in the volume's close (giving back journal space) is swallowed there: the
      // workload then ran to its end.
      const crashedAt = (await runWorkload(r, plan)) ?? plan.ops.length;
      if (count < n) {
        failures.push(`call ${n}: no crash happened`);
        continue;
      }
      setFaultHook(null);
      model?.cut(r.dir, rng);
      // Sometimes the recovery itself is cut short once, then run again.
      const replayCrash = rng.chance(0.25) ? rng.range(1, 4) : undefined;
      if (replayCrash !== undefined) replayCrashes++;
      const problems = await recoverAndCheck(r, plan, crashedAt, replayCrash, model && { model, rng });
      runs++;
      if (problems.length > 0) {
        failures.push(`crash at call ${n} (${kinds[n - 1]}${half ? ', torn' : ''}) during op ${crashedAt} (${describe(plan.ops[crashedAt])})${replayCrash ? `, recovery crashed at its call ${replayCrash}` : ''}: ${problems.join('; ')}`);
      }
      if (failures.length > 5) break;
    }
    if (failures.length > 5) break;
  }
  const count = (k: string): number => kinds.filter((x) => x === k).length;
  t.log(
    `${plan.ops.length} ops, ${kinds.length} write-type calls (writev ${count('writev')}, write ${count('write')}, fdatasync ${count('fdatasync')}, ` +
      `fsync ${count('fsync')}, ftruncate ${count('ftruncate')}, create ${count('create')}, link ${count('link')}, rename ${count('rename')}, unlink ${count('unlink')}, mkdir ${count('mkdir')}); ` +
      `${runs} crash runs (${replayCrashes} with a crashed recovery) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
  t.deepEqual(failures, []);
}

function describe(op: Op | undefined): string {
  if (!op) return 'none';
  if (op.kind === 'write') return `write ${op.file} [${op.offset}, ${op.offset + op.data.length})`;
  if (op.kind === 'truncate') return `truncate ${op.file} to ${op.size}`;
  if (op.kind === 'fsync') return `fsync(${op.mode}) ${op.file}`;
  return `${op.kind} ${op.file}`;
}

test.serial('crash at every write-type call of a random workload (and torn writes): recovery keeps every fsync and every package whole', async (t) => {
  // Master mode: the batch MAC under the journal key.
  await crashEverywhere(t, 0xc5a5f001, 75, 3 * P, true);
});

test.serial('the same with a dirty budget of one package: flushes in the middle of writes and extensions', async (t) => {
  // Without a journal key (ncrypt mode): a MAC per record under its file's key, and the image checks.
  await crashEverywhere(t, 0xc5a5f003, 70, P, false);
});

test.serial('the same with a large dirty budget: big flushes, many packages per journal batch', async (t) => {
  await crashEverywhere(t, 0xc5a5f002, 60, 64 * P, false);
});

// A power cut at every write-type call: what no sync made durable is lost, or any part of it
// (512-byte sectors) reaches the disk (test/helpers/power-cut.ts); the recovery, cut short once
// in a quarter of the runs, meets a second power cut.
test.serial('power cut at every write-type call (and torn writes): recovery keeps every fsync and every package whole', async (t) => {
  await crashEverywhere(t, 0xc5a5f004, 75, 3 * P, true, true);
});

test.serial('power cut, the same with a dirty budget of one package (ncrypt mode)', async (t) => {
  await crashEverywhere(t, 0xc5a5f005, 70, P, false, true);
});

// ---- a torn package, with and without its journal entry ----

/** A 4-package file, fsync'ed; then package 2 rewritten, its in-place write torn half-way by a crash. */
async function tornPackage(t: ExecutionContext): Promise<{ r: Run; file: string; before: Buffer; after: Buffer }> {
  const rng = new Rng(seedFor(0xc5a5f010));
  const r: Run = { dir: tempDir(t, 'torn'), mk: masterKeys(rng.bytes(32)), dirtyBytes: 64 * P };
  const file = path.join(r.dir, 'f.bin');
  const before = rng.bytes(3 * P + 1000);
  let vol = newVolume(r);
  let f = await vol.create(file, 'f.bin', 0o600);
  await f.write(0, before);
  await f.flush('full');
  await vol.release(f);
  vol.close();
  const patch = rng.bytes(P);
  const after = Buffer.from(before);
  patch.copy(after, 2 * P);
  vol = newVolume(r);
  f = await vol.open(file, 'f.bin');
  await f.write(2 * P, patch);
  await f.flush('none');
  // Tear the checkpoint's in-place write of the cipher file (the journal sync before it goes through).
  setFaultHook((op) => (op.kind === 'writev' && op.path === file ? 'half' : 'ok'));
  t.throws(() => vol.checkpoint(), { instanceOf: SimulatedCrash });
  await f.close().catch(() => undefined);
  vol.close();
  setFaultHook(null);
  return { r, file, before, after };
}

test.serial('a torn package whose journal entry is there is repaired by the replay (it holds the new version)', async (t) => {
  const { r, file, after } = await tornPackage(t);
  const torn = await checkTree({ root: r.dir, key: r.mk.keys.key });
  t.like(torn.files.find((f) => f.path === 'f.bin'), { status: 'damaged', problems: [{ index: 2, error: 'AuthenticationError' }] }, 'torn before the replay');
  const vol = newVolume(r);
  const replayed = (await vol.recover())!;
  t.deepEqual({ packages: replayed.packages, files: replayed.files, discarded: replayed.discarded }, { packages: 1, files: ['f.bin'], discarded: false });
  const f = await vol.open(file, 'f.bin');
  t.true((await f.read(0, after.length + 1)).equals(after), 'the new version of package 2, the rest unchanged');
  await vol.release(f);
  vol.close();
  t.is((await checkTree({ root: r.dir, key: r.mk.keys.key })).counts.bad, 0);
});

test.serial('a torn package without a journal entry: fsck names the file and the package; only that range fails to read', async (t) => {
  const { r, file, before } = await tornPackage(t);
  fs.rmSync(path.join(r.dir, '.darefs', 'journal'));
  const report = await checkTree({ root: r.dir, key: r.mk.keys.key });
  t.deepEqual(
    report.files.map((f) => ({ path: f.path, status: f.status, problems: f.problems.map((p) => [p.index, p.error]) })),
    [{ path: 'f.bin', status: 'damaged', problems: [[2, 'AuthenticationError']] }],
  );
  const vol = newVolume(r);
  t.deepEqual(await vol.recover(), { packages: 0, files: [], discarded: false, benign: false, skipped: [] }, 'nothing to replay');
  const f = await vol.open(file, 'f.bin');
  t.true((await f.read(0, 2 * P)).equals(before.subarray(0, 2 * P)), 'packages 0 and 1 read');
  t.true((await f.read(3 * P, 5000)).equals(before.subarray(3 * P)), 'package 3 reads');
  await t.throwsAsync(f.read(2 * P + 100, 10), { name: 'AuthenticationError', message: /package 2 of f\.bin/ });
  await t.throwsAsync(f.read(2 * P - 10, 20), { name: 'AuthenticationError' }, 'a read that reaches into it fails too');
  await vol.release(f);
  vol.close();
});

// ---- ENOSPC with the journal ----

/** Fills the disk to the last byte with the file `file`. */
function fillDisk(file: string): void {
  const fd = fs.openSync(file, 'w');
  try {
    for (const chunk of [65536, 4096, 1]) {
      try {
        for (;;) fs.writeSync(fd, Buffer.alloc(chunk));
      } catch (err) {
        if (!isEnospc(err)) throw err;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

function isEnospc(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOSPC';
}

test.serial('ENOSPC with the journal: failing flushes leave the file as it was, the journal empty, and the volume usable', async (t) => {
  const rng = new Rng(seedFor(0xc5a5f020));
  // Room for the journal's 1 MiB reserve and a file of about 3 MiB: batches of more than 16
  // packages need more journal space than the reserve.
  const dir = tmpfsDir(t, '4m');
  if (dir === undefined) return t.pass();
  const r: Run = { dir, mk: masterKeys(rng.bytes(32)), dirtyBytes: 64 * P };
  const file = path.join(dir, 'fill.bin');
  const vol = newVolume(r);
  const f = await vol.create(file, 'fill.bin', 0o600);
  let good: Buffer = rng.bytes(P + 50);
  await f.write(0, good);
  await f.flush('full');
  let failures = 0;
  const failedAt: string[] = [];
  const seen = (what: string): boolean => failedAt.some((w) => w.endsWith(what));
  for (let i = 0; i < 80 && !(seen('journal') && seen('fill.bin')); i++) {
    // The journal keeps the space of its biggest batch while the volume is open, so a batch
    // needs new space only when it is bigger than any before (past the 16-package reserve): on
    // such a round, fill the disk first and do not grow the file (the flush reserves a growth
    // before it writes the journal), so that the journal write itself meets ENOSPC.
    const fill = i % 2 === 1 && !seen('journal') && good.length > 16 * P;
    // Growth, and on every other round also changes in place (a bigger journal batch).
    const grow = fill ? Buffer.alloc(0) : rng.bytes(rng.range(P, 3 * P));
    const next = Buffer.concat([good, grow]);
    await f.write(good.length, grow);
    if (i % 2 === 1) {
      // A byte in every old package: the journal batch is as big as the file.
      for (let at = 100; at < good.length; at += P) {
        const patch = rng.bytes(1);
        await f.write(at, patch);
        patch.copy(next, at);
      }
    }
    if (fill) fillDisk(path.join(dir, 'filler'));
    // Which writes the flush tried: none to the file means the journal commit failed first.
    let wroteFile = false;
    setFaultHook((op) => {
      // The flush reserves the file's growth before its journal record is written.
      if ((op.kind === 'write' || op.kind === 'writev' || op.kind === 'fallocate') && op.path === file) wroteFile = true;
      return 'ok';
    });
    try {
      await f.flush('data');
      good = next;
      // In place, and the journal retired: the next round's batch alone needs journal space.
      vol.checkpoint();
    } catch (err) {
      if (!isEnospc(err)) throw err;
      if (fill) fs.rmSync(path.join(dir, 'filler'));
      failures++;
      failedAt.push(wroteFile ? 'growing write of fill.bin' : 'commit of the journal');
      setFaultHook(null);
      t.is(f.size, good.length, 'the object is back at the size on disk');
      t.true((await f.read(0, good.length + 1)).equals(good), 'and reads what is on disk');
      vol.checkpoint();
      t.deepEqual(journalOf(r), { packages: 0, files: [], torn: false }, 'the journal is empty');
      t.is(fs.statSync(file).size, cipherSize(good.length));
      const report = await checkTree({ root: dir, key: r.mk.keys.key });
      t.is(report.counts.bad, 0, JSON.stringify(report.files));
      // Make room for the next round: shrink the file (a journaled shrink needs no space).
      await f.truncate(P + 50);
      await f.flush('data');
      good = Buffer.from(good.subarray(0, P + 50));
    }
    fs.rmSync(path.join(dir, 'filler'), { force: true });
  }
  setFaultHook(null);
  t.log(`ENOSPC at: ${failedAt.join(', ')}`);
  t.true(seen('journal'), 'a journal commit failed (nothing was written in place)');
  t.true(seen('fill.bin'), 'a growing write failed (put back as it was)');
  // The reserve: on a disk filled to the last byte a small in-place rewrite still fits.
  const filler = fs.openSync(path.join(dir, 'filler'), 'w');
  for (const chunk of [65536, 4096, 1]) {
    try {
      for (;;) fs.writeSync(filler, Buffer.alloc(chunk));
    } catch (err) {
      if (!isEnospc(err)) throw err;
    }
  }
  fs.closeSync(filler);
  const patch = rng.bytes(300);
  await f.write(1000, patch);
  await t.notThrowsAsync(f.flush('data'), 'an in-place re-seal of one package on a full disk');
  patch.copy(good, 1000);
  fs.rmSync(path.join(dir, 'filler'));
  await vol.release(f);
  vol.close();
  const again = newVolume(r);
  t.deepEqual(await again.recover(), { packages: 0, files: [], discarded: false, benign: false, skipped: [] });
  const g = await again.open(file, 'fill.bin');
  t.true((await g.read(0, good.length + 1)).equals(good));
  await again.release(g);
  again.close();
});

test.serial('the journal keeps the space of a big batch while the volume is open and gives it back, empty, at close', async (t) => {
  const dir = tempDir(t, 'journal-space');
  const mk = masterKeys(new Rng(seedFor(0x5ace)).bytes(32));
  const vol = new Volume({ keys: mk.keys, settings: SETTINGS_V10, readOnly: false, packageCacheBytes: 4 * P, dirtyBytes: 64 * P, cipherDir: dir });
  const journalFile = path.join(dir, '.darefs', 'journal');
  const file = await vol.create(path.join(dir, 'big.bin'), 'big.bin', 0o600);
  await file.write(0, Buffer.alloc(40 * P, 1));
  await file.flush('data');
  vol.checkpoint();
  // An in-place batch of 40 packages: bigger than the 16-package reserve.
  await file.write(0, Buffer.alloc(40 * P, 2));
  await file.flush('data');
  vol.checkpoint();
  const reserve = JOURNAL_RESERVE;
  const grown = fs.statSync(journalFile).size;
  t.true(grown > reserve, `journal grew past the reserve (${grown} > ${reserve})`);
  await file.write(5, Buffer.from('x'));
  await file.flush('data');
  vol.checkpoint();
  t.is(fs.statSync(journalFile).size, grown, 'a later, smaller batch reuses the space');
  await vol.release(file);
  vol.close();
  t.is(fs.statSync(journalFile).size, reserve, 'given back at close');
  t.true(fs.readFileSync(journalFile).subarray(0, 8).equals(Buffer.alloc(8)), 'and empty (its magic zeroed)');
  t.deepEqual(journalOf({ dir, mk, dirtyBytes: P }), { packages: 0, files: [], torn: false });
});
