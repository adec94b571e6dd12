import * as fs from 'node:fs';
import { loadSysCalls } from '../sys';

/**
 * Every write-type system call the store makes in the cipher directory (cipher files, their
 * temporary files, the journal, directory syncs) goes through this module, so that tests can
 * stop the "process" at any of them: test/store-crash.test.ts crashes at every N-th call, and
 * tears writes in half, then recovers the way the next mount would.
 *
 * Without a hook each function is the node:fs call behind one null check.
 */

export type FaultKind = 'write' | 'writev' | 'ftruncate' | 'fsync' | 'fdatasync' | 'rename' | 'link' | 'unlink' | 'create' | 'mkdir' | 'rmdir' | 'fallocate';

export interface FaultOp {
  kind: FaultKind;
  /** The file or directory, when the caller knows it. */
  path?: string;
  /** The descriptor written or synced (a power-cut model finds the inode by it). */
  fd?: number;
  /** Bytes a write would write. */
  bytes?: number;
}

/**
 * 'ok': do it; 'crash': throw SimulatedCrash before it; 'half': write the first half of the
 * bytes, then throw (a torn write; for calls that write no data, the same as 'crash').
 */
export type FaultAction = 'ok' | 'crash' | 'half';
export type FaultHook = (op: FaultOp) => FaultAction;

/** Thrown in place of the call the hook chose to crash at, and by every call after it. */
export class SimulatedCrash extends Error {
  constructor(readonly op: FaultOp) {
    super(`simulated crash at ${op.kind}${op.path === undefined ? '' : ` ${op.path}`}`);
    this.name = 'SimulatedCrash';
  }
}

let hook: FaultHook | null = null;
/** Once crashed, the process is dead: every later write-type call throws too. */
let crashed: SimulatedCrash | null = null;

/** Installs (or with null removes) the test hook; also forgets an earlier simulated crash. */
export function setFaultHook(h: FaultHook | null): void {
  hook = h;
  crashed = null;
}

function decide(op: FaultOp): FaultAction {
  if (crashed) throw crashed;
  const action = hook!(op);
  if (action === 'crash') throw (crashed = new SimulatedCrash(op));
  return action;
}

function tear(op: FaultOp): never {
  throw (crashed = new SimulatedCrash(op));
}

export function writeSync(fd: number, buf: Buffer, offset: number, length: number, position: number, path?: string): number {
  if (hook !== null) {
    const op: FaultOp = { kind: 'write', path, fd, bytes: length };
    if (decide(op) === 'half') {
      const half = length >> 1;
      for (let done = 0; done < half; ) done += fs.writeSync(fd, buf, offset + done, half - done, position + done);
      tear(op);
    }
  }
  return fs.writeSync(fd, buf, offset, length, position);
}

export function writevSync(fd: number, bufs: Buffer[], position: number, path?: string): number {
  if (hook !== null) {
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const op: FaultOp = { kind: 'writev', path, fd, bytes: total };
    if (decide(op) === 'half') {
      let left = total >> 1;
      let at = position;
      for (const b of bufs) {
        const n = Math.min(left, b.length);
        for (let done = 0; done < n; ) done += fs.writeSync(fd, b, done, n - done, at + done);
        at += n;
        left -= n;
        if (left === 0) break;
      }
      tear(op);
    }
  }
  return fs.writevSync(fd, bufs, position);
}

export function ftruncateSync(fd: number, length: number, path?: string): void {
  if (hook !== null && decide({ kind: 'ftruncate', path, fd, bytes: length }) === 'half') tear({ kind: 'ftruncate', path });
  fs.ftruncateSync(fd, length);
}

export function fsyncSync(fd: number, path?: string): void {
  if (hook !== null && decide({ kind: 'fsync', path, fd }) === 'half') tear({ kind: 'fsync', path });
  fs.fsyncSync(fd);
}

export function fdatasyncSync(fd: number, path?: string): void {
  if (hook !== null && decide({ kind: 'fdatasync', path, fd }) === 'half') tear({ kind: 'fdatasync', path });
  fs.fdatasyncSync(fd);
}

export function renameSync(from: string, to: string): void {
  if (hook !== null && decide({ kind: 'rename', path: to }) === 'half') tear({ kind: 'rename', path: to });
  fs.renameSync(from, to);
}

export function linkSync(existing: string, newPath: string): void {
  if (hook !== null && decide({ kind: 'link', path: newPath }) === 'half') tear({ kind: 'link', path: newPath });
  fs.linkSync(existing, newPath);
}

export function unlinkSync(file: string): void {
  if (hook !== null && decide({ kind: 'unlink', path: file }) === 'half') tear({ kind: 'unlink', path: file });
  fs.unlinkSync(file);
}

/** unlink that ignores a missing file (cleanup after a failure). */
export function removeSync(file: string): void {
  try {
    unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * fallocate(2) through the addon. False when the addon is not there: Node has no fallocate, and
 * the caller then does without the reservation.
 */
export function fallocateSync(fd: number, mode: number, offset: number, length: number, path?: string): boolean {
  const calls = loadSysCalls().calls;
  if (calls === undefined) return false;
  if (hook !== null && decide({ kind: 'fallocate', path, fd, bytes: length }) === 'half') tear({ kind: 'fallocate', path });
  calls.fallocate(fd, mode, offset, length);
  return true;
}

/**
 * open(2) with O_CREAT in `flags`: makes a name, so it counts as a write. `open` does the
 * opening (the cipher directory's confined open).
 */
export function createSync(file: string, flags: number, mode: number, open: (file: string, flags: number, mode: number) => number = fs.openSync): number {
  if (hook !== null && decide({ kind: 'create', path: file }) === 'half') tear({ kind: 'create', path: file });
  return open(file, flags, mode);
}

export function mkdirSync(dir: string, mode: number): void {
  if (hook !== null && decide({ kind: 'mkdir', path: dir }) === 'half') tear({ kind: 'mkdir', path: dir });
  fs.mkdirSync(dir, { mode });
}

export function rmdirSync(dir: string): void {
  if (hook !== null && decide({ kind: 'rmdir', path: dir }) === 'half') tear({ kind: 'rmdir', path: dir });
  fs.rmdirSync(dir);
}

/** Cleanup after a failure: its own error must not hide the one being reported. */
export function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // the failure being cleaned up after is what gets reported
  }
}
