import * as fs from 'node:fs';
import * as path from 'node:path';
import { HEADER_SIZE, MAX_PACKAGE, PREFIX_SIZE, TAG_SIZE, payloadLength, plaintextSizeOrUndefined } from '../dare';

export interface ProbeSample {
  file: string;
  prefix: Buffer;
  /** Package 0, exactly as on disk. */
  package0: Buffer;
  plainSize: number;
}

/**
 * Finds a cipher file with at least one package, breadth-first, skipping `skip` names at the
 * root and anything that is not a regular stream: the ncrypt-mode password check needs one
 * package to try the password on. Stops after `limit` entries so a huge tree mounts quickly.
 */
export function findSamplePackage(root: string, skip: ReadonlySet<string>, limit = 10_000): ProbeSample | undefined {
  const queue: string[] = [root];
  let seen = 0;
  while (queue.length > 0 && seen < limit) {
    const dir = queue.shift()!;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (++seen > limit) break;
      if (dir === root && skip.has(e.name)) continue;
      const full = path.join(dir, e.name);
      if (e.isDirectory()) queue.push(full);
      if (!e.isFile()) continue;
      const sample = readPackage0(full);
      if (sample) return sample;
    }
  }
  return undefined;
}

function readPackage0(file: string): ProbeSample | undefined {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const plainSize = plaintextSizeOrUndefined(size);
    if (plainSize === undefined || plainSize === 0) return undefined;
    const length = HEADER_SIZE + payloadLength(0, plainSize) + TAG_SIZE;
    const buf = Buffer.alloc(PREFIX_SIZE + Math.min(length, MAX_PACKAGE));
    fs.readSync(fd, buf, 0, buf.length, 0);
    return { file, prefix: buf.subarray(0, PREFIX_SIZE), package0: buf.subarray(PREFIX_SIZE), plainSize };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
