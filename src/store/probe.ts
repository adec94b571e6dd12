import * as fs from 'node:fs';
import { HEADER_SIZE, MAX_PACKAGE, PREFIX_SIZE, TAG_SIZE, packageCount, payloadLength, plaintextSizeOrUndefined, verifyHeader } from '../dare';
import { CipherDir } from './cipher-dir';

export interface ProbeSample {
  file: string;
  prefix: Buffer;
  /** Package 0, exactly as on disk: header || ciphertext || tag, its header already checked. */
  package0: Buffer;
  plainSize: number;
}

export interface ProbeResult {
  /** Files whose package 0 has a well-formed header consistent with the file size, in scan order. */
  samples: ProbeSample[];
  /** Entries seen that are not directories (files of any kind, symlinks, ...), samples included. */
  others: number;
  /** The scan stopped at its entry limit: what it did not reach is unknown. */
  limited: boolean;
}

export interface ProbeOptions {
  /** Stop once this many samples are found. */
  maxSamples?: number;
  /** Look at no more than this many entries, so a huge tree mounts quickly. */
  limit?: number;
}

/**
 * Finds cipher files to try a password on, breadth-first, skipping `skip` names at the root. The
 * cipher directory is hostile (FORMAT.md §6): a file counts only when its size is a valid stream
 * and package 0's header is well formed and consistent with that size, so that junk (a short
 * file, a bad header) cannot stand in for a check. The caller decides what no sample means. The
 * walk goes through a CipherDir: no symlink is followed, not even a directory swapped for one
 * while it runs, and no FIFO planted in a file's place is opened.
 */
export function findSamplePackages(root: string, skip: ReadonlySet<string>, opts: ProbeOptions = {}): ProbeResult {
  const dir = CipherDir.open(root);
  try {
    return probe(dir, skip, opts);
  } finally {
    dir.close();
  }
}

function probe(dir: CipherDir, skip: ReadonlySet<string>, opts: ProbeOptions): ProbeResult {
  const maxSamples = opts.maxSamples ?? 1;
  const limit = opts.limit ?? 10_000;
  const result: ProbeResult = { samples: [], others: 0, limited: false };
  const queue: string[] = [''];
  let seen = 0;
  while (queue.length > 0) {
    const rel = queue.shift()!;
    let entries: fs.Dirent[];
    try {
      entries = dir.readdirTypes(rel);
    } catch {
      continue;
    }
    for (const e of entries) {
      if (rel === '' && skip.has(e.name)) continue;
      if (++seen > limit) {
        result.limited = true;
        return result;
      }
      const child = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) {
        queue.push(child);
        continue;
      }
      result.others++;
      if (!e.isFile()) continue;
      const sample = readPackage0(dir, child);
      if (sample === undefined) continue;
      result.samples.push(sample);
      if (result.samples.length >= maxSamples) return result;
    }
  }
  return result;
}

function readPackage0(dir: CipherDir, rel: string): ProbeSample | undefined {
  const file = dir.absolute(rel);
  let fd: number | undefined;
  try {
    // Never follow a planted symlink, never open a planted FIFO (FORMAT.md §6).
    fd = dir.openFile(rel, fs.constants.O_RDONLY);
    const st = fs.fstatSync(fd);
    const plainSize = plaintextSizeOrUndefined(st.size);
    if (plainSize === undefined || plainSize === 0) return undefined;
    const length = HEADER_SIZE + payloadLength(0, plainSize) + TAG_SIZE;
    const buf = Buffer.alloc(PREFIX_SIZE + Math.min(length, MAX_PACKAGE));
    if (fs.readSync(fd, buf, 0, buf.length, 0) !== buf.length) return undefined;
    const package0 = buf.subarray(PREFIX_SIZE);
    const header = package0.subarray(0, HEADER_SIZE);
    // Version, cipher, length field (and for 1.0 the sequence number, for 2.0 the final flag)
    // must agree with the size: throws otherwise.
    verifyHeader(header, { index: 0, payloadLength: payloadLength(0, plainSize), last: packageCount(plainSize) === 1, reference: header });
    return { file, prefix: buf.subarray(0, PREFIX_SIZE), package0, plainSize };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
