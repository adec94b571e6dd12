/**
 * Model-based random test of the read-write mount: a seeded sequence of operations applied both
 * through the mount and to a plain directory (the model), compared after every step: the whole
 * tree (names, types, sizes, modes), and the content of every file the step touched — read
 * through an open handle when there is one (no flush, so unsealed changes stay unsealed), else
 * through a fresh open; every CHECK_EVERY steps and around the remount, every file through a fresh
 * open. Half way the daemon is stopped and a new one mounts the same cipher directory. After each
 * unmount every cipher file is decrypted directly and must equal the model.
 *
 * Replay a failure with DAREFS_SEED=<seed printed in the log> (DAREFS_RW_STEPS changes the length).
 */
import test, { ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { prng } from './helpers/darefs';
import { MountContext, assertNoFuseMountsLeft, cleanupLeftovers } from './helpers/mount';
import { cipherTree, decryptCipherFile, isFuseHidden, listTree, outcome, randomBytesFrom, readFully, stopCleanly, volumeKeys, withMasterMount } from './helpers/rw';

const P = 65536;
const STEPS = Number(process.env.DAREFS_RW_STEPS ?? 2000);
const CHECK_EVERY = 50;
const MAX_FILE = 1_500_000;
const MAX_HANDLES = 5;
const FILE_NAMES = ['f0', 'f1', 'f2', 'f3', 'f4', 'f5'];
const DIR_NAMES = ['d0', 'd1', 'd2'];

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

interface Handle {
  /** Path when opened (messages only). */
  opened: string;
  flags: string;
  mdl: FileHandle;
  mnt: FileHandle;
  /** The model file's inode: finds the handle's current name after renames. */
  ino: number;
}

class Failure extends Error {}

class Runner {
  readonly handles: Handle[] = [];
  readonly history: string[] = [];
  step = 0;
  readonly stats = { ops: new Map<string, number>(), bytesWritten: 0, errorsCompared: 0 };

  constructor(
    readonly t: ExecutionContext,
    readonly rand: () => number,
    readonly model: string,
    public m: MountContext,
  ) {}

  // ---- random choices ----

  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.rand() * items.length)];
  }

  chance(p: number): boolean {
    return this.rand() < p;
  }

  // ---- model inspection (plain directory: synchronous calls are fine) ----

  walkModel(): { files: string[]; dirs: string[] } {
    const files: string[] = [];
    const dirs: string[] = [''];
    const walk = (rel: string): void => {
      for (const e of fs.readdirSync(path.join(this.model, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          dirs.push(r);
          walk(r);
        } else files.push(r);
      }
    };
    walk('');
    return { files, dirs };
  }

  /** Current model path of a handle's file, or undefined once unlinked. */
  pathOf(h: Handle): string | undefined {
    for (const f of this.walkModel().files) {
      if (fs.statSync(path.join(this.model, f)).ino === h.ino) return f;
    }
    return undefined;
  }

  mdl(rel: string): string {
    return path.join(this.model, rel);
  }

  mnt(rel: string): string {
    return path.join(this.m.mountpoint, rel);
  }

  fail(message: string): never {
    throw new Failure(`step ${this.step}: ${message}\nlast operations:\n${this.history.slice(-25).join('\n')}`);
  }

  // ---- running one operation on both sides ----

  /** Runs `op` on the model and the mount; both must succeed or fail with the same code. */
  async both<T>(what: string, onModel: () => Promise<T>, onMount: () => Promise<T>): Promise<{ ok: true; a: T; b: T } | { ok: false }> {
    let a: T | undefined;
    let b: T | undefined;
    const ea = await outcome(onModel().then((v) => (a = v)));
    const eb = await outcome(onMount().then((v) => (b = v)));
    if (ea !== eb) this.fail(`${what}: model says ${ea}, mount says ${eb}`);
    if (ea !== 'ok') {
      this.stats.errorsCompared++;
      return { ok: false };
    }
    return { ok: true, a: a as T, b: b as T };
  }

  note(desc: string): void {
    this.history.push(`${this.step}: ${desc}`);
    const kind = desc.split(' ')[0];
    this.stats.ops.set(kind, (this.stats.ops.get(kind) ?? 0) + 1);
  }

  // ---- sizes and offsets ----

  async sizeOf(h: Handle): Promise<number> {
    return (await h.mdl.stat()).size;
  }

  chooseOffset(size: number): number {
    const r = this.rand();
    let off: number;
    if (r < 0.35) off = this.int(0, Math.ceil(size / P) + 1) * P + this.int(-40, 40);
    else if (r < 0.7) off = this.int(0, size);
    else if (r < 0.85) off = size;
    else off = size + this.int(1, 300_000);
    return Math.min(Math.max(0, off), MAX_FILE - 1);
  }

  chooseLength(): number {
    const r = this.rand();
    if (r < 0.45) return this.int(1, 64);
    if (r < 0.75) return this.int(65, 9000);
    if (r < 0.95) return this.int(9001, 200_000);
    return this.pick([P, 2 * P, P - 1, P + 1, 2 * P + 17]);
  }

  chooseNewSize(size: number): number {
    const r = this.rand();
    if (r < 0.1) return 0;
    if (r < 0.35) return Math.min(MAX_FILE, this.int(0, Math.ceil(size / P) + 2) * P);
    if (r < 0.55) return Math.min(MAX_FILE, Math.max(0, this.int(0, Math.ceil(size / P) + 1) * P + this.int(-40, 40)));
    if (r < 0.8) return this.int(0, size);
    return Math.min(MAX_FILE, size + this.int(1, 300_000));
  }

  // ---- the operations ----

  async opOpen(rel?: string, forceFlags?: string): Promise<string[]> {
    const { files, dirs } = this.walkModel();
    if (this.handles.length >= MAX_HANDLES) return this.opClose();
    const flags = forceFlags ?? this.pick(['r+', 'r+', 'w+', 'a+', 'wx+']);
    let target = rel;
    if (target === undefined) {
      if (flags === 'r+' && files.length > 0 && this.chance(0.9)) target = this.pick(files);
      else {
        const dir = this.pick(dirs);
        target = dir ? `${dir}/${this.pick(FILE_NAMES)}` : this.pick(FILE_NAMES);
      }
    }
    this.note(`open ${target} ${flags}`);
    const r = await this.both(`open ${target} ${flags}`, () => fsp.open(this.mdl(target), flags), () => fsp.open(this.mnt(target), flags));
    if (!r.ok) return [];
    const ino = (await r.a.stat()).ino;
    this.handles.push({ opened: target, flags, mdl: r.a, mnt: r.b, ino });
    return [target];
  }

  async opWrite(): Promise<string[]> {
    if (this.handles.length === 0) return this.opOpen();
    const h = this.pick(this.handles);
    const size = await this.sizeOf(h);
    const offset = this.chooseOffset(size);
    const length = Math.max(1, Math.min(this.chooseLength(), MAX_FILE - offset));
    if (h.flags === 'a+' && size + length > MAX_FILE) return this.opTruncateHandle(h);
    const data = randomBytesFrom(this.rand, length);
    this.note(`write ${h.opened}(${h.flags}) ${length} at ${offset} (size ${size})`);
    const r = await this.both(`write ${length} at ${offset}`, () => h.mdl.write(data, 0, length, offset), () => h.mnt.write(data, 0, length, offset));
    if (r.ok && r.a.bytesWritten !== r.b.bytesWritten) this.fail(`write: model wrote ${r.a.bytesWritten}, mount ${r.b.bytesWritten}`);
    this.stats.bytesWritten += length;
    return this.touched(h);
  }

  async opRead(): Promise<string[]> {
    if (this.handles.length === 0) return this.opOpen();
    const h = this.pick(this.handles);
    const size = await this.sizeOf(h);
    const offset = this.chance(0.1) ? size + this.int(0, 1000) : this.chooseOffset(size);
    const length = this.chooseLength();
    this.note(`read ${h.opened} ${length} at ${offset} (size ${size})`);
    const ba = Buffer.alloc(length);
    const bb = Buffer.alloc(length);
    const r = await this.both('read', () => h.mdl.read(ba, 0, length, offset), () => h.mnt.read(bb, 0, length, offset));
    if (r.ok) {
      if (r.a.bytesRead !== r.b.bytesRead) this.fail(`read ${length} at ${offset}: model read ${r.a.bytesRead} bytes, mount ${r.b.bytesRead}`);
      const diff = firstDifference(ba.subarray(0, r.a.bytesRead), bb.subarray(0, r.b.bytesRead));
      if (diff >= 0) this.fail(`read ${length} at ${offset}: bytes differ at file offset ${offset + diff}`);
    }
    return [];
  }

  async opTruncateHandle(given?: Handle): Promise<string[]> {
    if (this.handles.length === 0) return this.opOpen();
    const h = given ?? this.pick(this.handles);
    const size = await this.sizeOf(h);
    const to = this.chooseNewSize(size);
    this.note(`ftruncate ${h.opened} ${size} -> ${to}`);
    await this.both('ftruncate', () => h.mdl.truncate(to), () => h.mnt.truncate(to));
    return this.touched(h);
  }

  async opTruncatePath(): Promise<string[]> {
    const { files } = this.walkModel();
    if (files.length === 0) return this.opOpen();
    const rel = this.pick(files);
    const size = fs.statSync(this.mdl(rel)).size;
    const to = this.chooseNewSize(size);
    this.note(`truncate ${rel} ${size} -> ${to}`);
    await this.both('truncate', () => fsp.truncate(this.mdl(rel), to), () => fsp.truncate(this.mnt(rel), to));
    return [rel];
  }

  async opSync(): Promise<string[]> {
    if (this.handles.length === 0) return this.opOpen();
    const h = this.pick(this.handles);
    const data = this.chance(0.3);
    this.note(`${data ? 'fdatasync' : 'fsync'} ${h.opened}`);
    await this.both('fsync', () => (data ? h.mdl.datasync() : h.mdl.sync()), () => (data ? h.mnt.datasync() : h.mnt.sync()));
    return this.touched(h);
  }

  async opClose(given?: Handle): Promise<string[]> {
    if (this.handles.length === 0) return this.opOpen();
    const h = given ?? this.pick(this.handles);
    const touched = this.touched(h);
    this.handles.splice(this.handles.indexOf(h), 1);
    this.note(`close ${h.opened}`);
    await this.both('close', () => h.mdl.close(), () => h.mnt.close());
    return touched;
  }

  async opReopen(): Promise<string[]> {
    if (this.handles.length === 0) return this.opOpen();
    const h = this.pick(this.handles);
    const rel = this.pathOf(h);
    await this.opClose(h);
    if (rel === undefined) return [];
    return this.opOpen(rel, this.pick(['r+', 'a+']));
  }

  async opWriteFile(append: boolean): Promise<string[]> {
    const { files, dirs } = this.walkModel();
    let rel: string;
    if (files.length > 0 && this.chance(0.7)) rel = this.pick(files);
    else {
      const dir = this.pick(dirs);
      rel = dir ? `${dir}/${this.pick(FILE_NAMES)}` : this.pick(FILE_NAMES);
    }
    const size = fs.existsSync(this.mdl(rel)) && fs.statSync(this.mdl(rel)).isFile() ? fs.statSync(this.mdl(rel)).size : 0;
    const length = Math.min(this.chooseLength(), append ? Math.max(0, MAX_FILE - size) : MAX_FILE);
    const data = randomBytesFrom(this.rand, length);
    this.note(`${append ? 'appendFile' : 'writeFile'} ${rel} ${length}`);
    if (append) await this.both('appendFile', () => fsp.appendFile(this.mdl(rel), data), () => fsp.appendFile(this.mnt(rel), data));
    else await this.both('writeFile', () => fsp.writeFile(this.mdl(rel), data), () => fsp.writeFile(this.mnt(rel), data));
    return [rel];
  }

  async opRenameFile(): Promise<string[]> {
    const { files, dirs } = this.walkModel();
    if (files.length === 0) return this.opOpen();
    const from = this.pick(files);
    let to: string;
    if (this.chance(0.4) && files.length > 1) to = this.pick(files);
    else {
      const dir = this.pick(dirs);
      to = dir ? `${dir}/${this.pick(FILE_NAMES)}` : this.pick(FILE_NAMES);
    }
    this.note(`rename ${from} -> ${to}`);
    await this.both('rename', () => fsp.rename(this.mdl(from), this.mdl(to)), () => fsp.rename(this.mnt(from), this.mnt(to)));
    return [from, to];
  }

  async opRenameDir(): Promise<string[]> {
    const { dirs } = this.walkModel();
    const candidates = dirs.filter((d) => d !== '');
    if (candidates.length === 0) return this.opMkdir();
    const from = this.pick(candidates);
    const parent = this.pick(dirs.filter((d) => d.split('/').length < 2));
    const name = this.pick(DIR_NAMES);
    const to = parent ? `${parent}/${name}` : name;
    // libfuse keeps unlinked open files as .fuse_hidden* in their directory: a target dir
    // holding one is not empty on the mount. Not a darefs matter; avoid it.
    if (await this.hasFuseHidden(to)) return [];
    this.note(`rename-dir ${from} -> ${to}`);
    await this.both('rename dir', () => fsp.rename(this.mdl(from), this.mdl(to)), () => fsp.rename(this.mnt(from), this.mnt(to)));
    return [];
  }

  async opUnlink(): Promise<string[]> {
    const { files, dirs } = this.walkModel();
    let rel: string;
    if (files.length > 0 && this.chance(0.9)) rel = this.pick(files);
    else rel = this.chance(0.5) && dirs.length > 1 ? this.pick(dirs.slice(1)) : 'nonexistent';
    this.note(`unlink ${rel}`);
    await this.both('unlink', () => fsp.unlink(this.mdl(rel)), () => fsp.unlink(this.mnt(rel)));
    return [];
  }

  async opMkdir(): Promise<string[]> {
    const { dirs } = this.walkModel();
    const parent = this.pick(dirs.filter((d) => d.split('/').length < 2));
    const rel = parent ? `${parent}/${this.pick(DIR_NAMES)}` : this.pick(DIR_NAMES);
    this.note(`mkdir ${rel}`);
    await this.both('mkdir', () => fsp.mkdir(this.mdl(rel)), () => fsp.mkdir(this.mnt(rel)));
    return [];
  }

  async opRmdir(): Promise<string[]> {
    const { dirs } = this.walkModel();
    const candidates = dirs.filter((d) => d !== '');
    if (candidates.length === 0) return this.opMkdir();
    const rel = this.pick(candidates);
    if (await this.hasFuseHidden(rel)) return [];
    this.note(`rmdir ${rel}`);
    await this.both('rmdir', () => fsp.rmdir(this.mdl(rel)), () => fsp.rmdir(this.mnt(rel)));
    return [];
  }

  async hasFuseHidden(rel: string): Promise<boolean> {
    const names = await fsp.readdir(this.mnt(rel)).catch(() => [] as string[]);
    return names.some(isFuseHidden);
  }

  touched(h: Handle): string[] {
    const rel = this.pathOf(h);
    return rel === undefined ? [] : [rel];
  }

  async randomStep(): Promise<string[]> {
    const r = this.rand() * 100;
    if (r < 9) return this.opOpen();
    if (r < 39) return this.opWrite();
    if (r < 48) return this.opRead();
    if (r < 53) return this.opTruncateHandle();
    if (r < 57) return this.opTruncatePath();
    if (r < 62) return this.opSync();
    if (r < 68) return this.opClose();
    if (r < 71) return this.opReopen();
    if (r < 75) return this.opWriteFile(false);
    if (r < 77) return this.opWriteFile(true);
    if (r < 83) return this.opRenameFile();
    if (r < 85) return this.opRenameDir();
    if (r < 89) return this.opUnlink();
    if (r < 93) return this.opMkdir();
    if (r < 95) return this.opRmdir();
    // An operation whose outcome is an error on ext4: the mount must give the same errno.
    return this.opExpectedError();
  }

  async opExpectedError(): Promise<string[]> {
    const { files, dirs } = this.walkModel();
    const kind = this.int(0, 4);
    if (kind === 0 && files.length > 0) {
      const rel = this.pick(files);
      this.note(`open-excl-existing ${rel}`);
      await this.both('open wx existing', () => fsp.open(this.mdl(rel), 'wx'), () => fsp.open(this.mnt(rel), 'wx'));
    } else if (kind === 1 && files.length > 0 && dirs.length > 1) {
      const from = this.pick(files);
      const to = this.pick(dirs.slice(1));
      this.note(`rename-file-over-dir ${from} -> ${to}`);
      await this.both('rename file over dir', () => fsp.rename(this.mdl(from), this.mdl(to)), () => fsp.rename(this.mnt(from), this.mnt(to)));
    } else if (kind === 2 && dirs.length > 1) {
      const from = this.pick(dirs.slice(1));
      const to = `${from}/${this.pick(DIR_NAMES)}`;
      this.note(`rename-dir-into-itself ${from} -> ${to}`);
      await this.both('rename dir into itself', () => fsp.rename(this.mdl(from), this.mdl(to)), () => fsp.rename(this.mnt(from), this.mnt(to)));
    } else if (kind === 3) {
      const rel = `nonexistent/${this.pick(FILE_NAMES)}`;
      this.note(`create-in-missing-dir ${rel}`);
      await this.both('create in missing dir', () => fsp.writeFile(this.mdl(rel), 'x'), () => fsp.writeFile(this.mnt(rel), 'x'));
    } else if (files.length > 0) {
      const rel = this.pick(files);
      this.note(`mkdir-over-file ${rel}`);
      await this.both('mkdir over file', () => fsp.mkdir(this.mdl(rel)), () => fsp.mkdir(this.mnt(rel)));
    }
    return [];
  }

  // ---- comparisons ----

  async compareTree(): Promise<void> {
    const want = await listTree(this.model);
    const got = await listTree(this.m.mountpoint, (name) => isFuseHidden(name));
    const wantKeys = [...want.keys()].join(' ');
    const gotKeys = [...got.keys()].join(' ');
    if (wantKeys !== gotKeys) this.fail(`listing differs:\n model: ${wantKeys}\n mount: ${gotKeys}`);
    for (const [rel, w] of want) {
      const g = got.get(rel)!;
      if (w.type !== g.type) this.fail(`${rel}: type ${g.type}, model ${w.type}`);
      if (w.size !== g.size) this.fail(`${rel}: size ${String(g.size)}, model ${String(w.size)}`);
      if (w.mode !== g.mode) this.fail(`${rel}: mode ${g.mode?.toString(8)}, model ${w.mode?.toString(8)}`);
    }
  }

  /** Content of a file by name: through an open handle on it if any, else a fresh open. */
  async compareFile(rel: string, fresh: boolean): Promise<void> {
    if (!fs.existsSync(this.mdl(rel)) || !fs.statSync(this.mdl(rel)).isFile()) return;
    const want = fs.readFileSync(this.mdl(rel));
    const ino = fs.statSync(this.mdl(rel)).ino;
    const h = fresh ? undefined : this.handles.find((x) => x.ino === ino);
    let got: Buffer;
    if (h) {
      got = await readFully(h.mnt, want.length + 1);
    } else {
      got = await fsp.readFile(this.mnt(rel));
    }
    const diff = firstDifference(want, got);
    if (diff >= 0) this.fail(`${rel} (${h ? 'through its open handle' : 'fresh open'}): content differs at offset ${diff} (model ${want.length} bytes, mount ${got.length})`);
  }

  /** Files unlinked while open: only their handles reach them. */
  async compareHiddenHandles(): Promise<void> {
    for (const h of this.handles) {
      if (this.pathOf(h) !== undefined) continue;
      const size = await this.sizeOf(h);
      const want = await readFully(h.mdl, size);
      const got = await readFully(h.mnt, size + 1);
      const diff = firstDifference(want, got);
      if (diff >= 0) this.fail(`unlinked-while-open ${h.opened}: content differs at ${diff} (model ${size}, mount ${got.length})`);
    }
  }

  async compareAll(): Promise<void> {
    await this.compareTree();
    for (const f of this.walkModel().files) await this.compareFile(f, true);
    await this.compareHiddenHandles();
  }

  async closeAll(): Promise<void> {
    while (this.handles.length > 0) {
      const touched = await this.opClose(this.handles[0]);
      for (const rel of touched) await this.compareFile(rel, true);
    }
  }

  /** After an unmount: every cipher file decrypts to the model's content; same tree. */
  async checkCipherDir(): Promise<void> {
    const keyFor = await volumeKeys(this.m.cipherDir);
    const model = await listTree(this.model);
    const { tree: cipher, cipherPath } = await cipherTree(this.m.cipherDir);
    const mk = [...model.keys()].join(' ');
    const ck = [...cipher.keys()].join(' ');
    if (mk !== ck) this.fail(`cipher directory tree differs from the model:\n model:  ${mk}\n cipher: ${ck}`);
    for (const [rel, e] of model) {
      const c = cipher.get(rel)!;
      if (c.type !== e.type || c.mode !== e.mode) this.fail(`cipher ${rel}: ${c.type} ${c.mode?.toString(8)}, model ${e.type} ${e.mode?.toString(8)}`);
      if (e.type !== 'file') continue;
      let plain: Buffer;
      try {
        plain = await decryptCipherFile(keyFor, cipherPath(rel));
      } catch (err) {
        this.fail(`cipher file ${rel} does not decrypt: ${err instanceof Error ? err.message : String(err)}`);
      }
      const want = fs.readFileSync(this.mdl(rel));
      const diff = firstDifference(want, plain);
      if (diff >= 0) this.fail(`cipher file ${rel} decrypts to other content: first difference at ${diff} (model ${want.length}, decrypted ${plain.length})`);
    }
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  if (a.subarray(0, n).equals(b.subarray(0, n))) return a.length === b.length ? -1 : n;
  let lo = 0;
  let hi = n;
  // Binary search on equal prefixes.
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (a.subarray(0, mid).equals(b.subarray(0, mid))) lo = mid;
    else hi = mid;
  }
  return a[lo] === b[lo] ? hi - 1 : lo;
}

test.serial('seeded operations through the mount match a plain directory step by step, across a remount', async (t) => {
  t.timeout(170_000);
  const seed = Number(process.env.DAREFS_SEED ?? Date.now() % 1_000_000);
  t.log(`seed ${seed} (replay with DAREFS_SEED=${seed}), ${STEPS} steps`);
  const rand = prng(seed);
  await withMasterMount(
    t,
    async (m) => {
      const model = path.join(m.root, 'model');
      const r = new Runner(t, rand, model, m);
      const started = Date.now();
      try {
        for (r.step = 1; r.step <= STEPS; r.step++) {
          const touched = await r.randomStep();
          await r.compareTree();
          const fresh = r.chance(0.3);
          for (const rel of new Set(touched)) await r.compareFile(rel, fresh);
          if (r.step % CHECK_EVERY === 0) await r.compareAll();
          if (r.step === Math.floor(STEPS / 2)) {
            r.note('remount');
            await r.closeAll();
            await r.compareAll();
            await stopCleanly(t, m);
            await r.checkCipherDir();
            await m.respawn();
            await r.compareAll();
          }
        }
        await r.closeAll();
        await r.compareAll();
      } catch (err) {
        // Close what is still open so the harness can unmount.
        for (const h of r.handles) {
          await h.mnt.close().catch(() => undefined);
          await h.mdl.close().catch(() => undefined);
        }
        throw err;
      }
      await stopCleanly(t, m);
      await r.checkCipherDir();
      const ops = [...r.stats.ops].map(([k, v]) => `${k} ${v}`).join(', ');
      t.log(`${STEPS} steps in ${((Date.now() - started) / 1000).toFixed(1)} s; ${(r.stats.bytesWritten / 1e6).toFixed(1)} MB written; ${r.stats.errorsCompared} matching errors; ${ops}`);
      t.pass();
    },
    { setup: async (dirs) => fsp.mkdir(path.join(dirs.root, 'model')) },
  );
});
