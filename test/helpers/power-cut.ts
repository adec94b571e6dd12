/**
 * A power-cut model over the store's fault-injection layer (src/store/io.ts), in the spirit of
 * LazyFS: it remembers, per inode, the content the last completed fsync/fdatasync made durable
 * (or what the file held when the store first wrote it), and cut() puts every such file back
 * to that content with any subset of the 512-byte sectors written since (and its durable size or
 * its current one): what a disk that wrote some of the page cache back, in any order, leaves.
 * Names (create, link, rename, unlink) count as durable at once: the harsh case for data, which
 * then shows under its new name without its content.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FaultAction, FaultOp } from '../../src/store';
import { Rng } from './store';

const SECTOR = 512;

export class PowerCut {
  /** Durable content by inode ("dev:ino"). */
  private readonly durable = new Map<string, Buffer>();

  /** Wraps a fault hook's decision: call it with every op and the action chosen for it. */
  observe(op: FaultOp, action: FaultAction): void {
    if (op.kind === 'unlink' || op.kind === 'rename') {
      // The inode that loses its last name (unlinked, or replaced by the rename) is gone.
      const st = lstatOrUndefined(op.path);
      if (st && st.isFile() && st.nlink === 1) this.durable.delete(key(st));
      return;
    }
    if (op.fd === undefined) return;
    const st = fs.fstatSync(op.fd);
    if (!st.isFile()) return;
    const k = key(st);
    if (op.kind === 'fsync' || op.kind === 'fdatasync') {
      // The hook runs before the call: a sync changes no content, so what is there now is what it
      // makes durable, if it runs.
      if (action === 'ok') this.durable.set(k, readAll(op.fd, st.size));
      return;
    }
    // The first write-type call on an inode: what it holds until then is durable (files the test
    // wrote before, or a new empty file).
    if (!this.durable.has(k)) this.durable.set(k, readAll(op.fd, st.size));
  }

  /** The power cut: every file under `root` the model knows goes back as described above. */
  cut(root: string, rng: Rng): void {
    for (const file of walk(root)) {
      const st = fs.lstatSync(file);
      const before = this.durable.get(key(st));
      if (before === undefined) continue;
      const now = fs.readFileSync(file);
      const size = rng.chance(0.5) ? before.length : now.length;
      const out = Buffer.alloc(size);
      before.copy(out, 0, 0, Math.min(size, before.length));
      for (let at = 0; at < size; at += SECTOR) {
        const end = Math.min(size, at + SECTOR);
        const same = now.subarray(at, end).equals(out.subarray(at, end));
        if (!same && at < now.length && rng.chance(0.5)) {
          out.fill(0, at, end);
          now.copy(out, at, at, Math.min(end, now.length));
        }
      }
      fs.writeFileSync(file, out);
    }
    this.durable.clear();
  }
}

function key(st: fs.Stats): string {
  return `${st.dev}:${st.ino}`;
}

function lstatOrUndefined(p: string | undefined): fs.Stats | undefined {
  if (p === undefined) return undefined;
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}

function readAll(fd: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  let got = 0;
  while (got < size) {
    const n = fs.readSync(fd, buf, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) out.push(...walk(p));
    else if (d.isFile()) out.push(p);
  }
  return out;
}
