// The cipher side of `import` and `export`: unlocking the volume the way `mount` does, and the
// two file codecs for tree-copy.ts (plaintext → DARE stream, DARE stream → plaintext).

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Cipher,
  cipherFromName,
  cipherSize,
  DareError,
  decryptStream,
  encryptStream,
  plaintextSize,
  plaintextSizeOrUndefined,
  PREFIX_SIZE,
  SealedLinkError,
  ShortPrefixError,
  Version,
  versionFromName,
} from '../dare';
import { readMountInfo } from '../fuse/mountpoint';
import type { MasterKdf } from '../keys';
import { openLink, openVolume, sealLink, type CipherDir, type KeySource, type OpenedVolume } from '../store';
import { defineOptions, type OptionSpec } from './args';
import { CliError, exitCodeFor, UsageError } from './errors';
import { ExitCode } from './exit-codes';
import { KEYFILE_OPTION, PASSWORD_OPTIONS } from './secrets';
import { counting, formatSummary, IO_CHUNK, isWithin, readPlain, realPathOf, writeAll, type CopySummary, type FileCodec } from './tree-copy';
import { fsPath } from './tree-io';
import { checkVolumeSecretOptions, collectVolumeSecrets, wipeVolumeSecrets } from './volume-secrets';

/** Options of import and export. */
export const TREE_COMMAND_OPTIONS = defineOptions([
  ...PASSWORD_OPTIONS,
  KEYFILE_OPTION,
  { name: 'ncrypt', help: 'CIPHERDIR is a plain directory of sio ncrypt files (no .darefs/): use the password' },
  { name: 'kdf', value: 'KDF', choices: ['hmac-sha256', 'hkdf-sha256'], help: 'with --keyfile and no volume config: hmac-sha256 (default) or hkdf-sha256' },
  { name: 'jobs', short: 'j', value: 'N', help: 'files copied at once (default 4)' },
  { name: 'quick', help: 'skip a file whose copy has the right size and mtime without reading it to verify it' },
  { name: 'quiet', short: 'q', help: 'no progress line, notes or summary (errors are still shown)' },
] as const satisfies readonly OptionSpec[]);

export interface TreeCommandOptions {
  passfile?: string;
  extpass?: string;
  keyfile?: string;
  ncrypt: boolean;
  kdf?: string;
  jobs?: string;
}

export const DEFAULT_JOBS = 4;

export function parseJobs(value: string | undefined, command: string): number {
  if (value === undefined) return DEFAULT_JOBS;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new UsageError(`--jobs takes a whole number from 1 to 64, not ${JSON.stringify(value)}`, command);
  return n;
}

/** Refuses PLAINDIR inside CIPHERDIR, CIPHERDIR inside PLAINDIR, and the same directory twice. */
export async function refuseNesting(plainDir: string, cipherDir: string, command: string): Promise<void> {
  const plain = await realPathOf(plainDir);
  const cipher = await realPathOf(cipherDir);
  if (plain === cipher) throw new UsageError(`PLAINDIR and CIPHERDIR are the same directory (${cipher}): give two separate directories`, command);
  if (isWithin(plain, cipher)) {
    throw new UsageError(`PLAINDIR ${plainDir} is inside CIPHERDIR ${cipherDir}: choose a plaintext directory outside the cipher directory`, command);
  }
  if (isWithin(cipher, plain)) {
    throw new UsageError(`CIPHERDIR ${cipherDir} is inside PLAINDIR ${plainDir}: choose a plaintext directory that does not contain the cipher directory`, command);
  }
}

/** The mount point where a darefs daemon serves `cipherDir`, if any. */
export async function mountedAt(cipherDir: string): Promise<string | undefined> {
  const names = new Set([path.resolve(cipherDir), await realPathOf(cipherDir)]);
  const entries = await readMountInfo().catch(() => []);
  return entries.find((e) => e.fsType === 'fuse.darefs' && names.has(e.source))?.mountPoint;
}

export interface UnlockedTree {
  opened: OpenedVolume;
  /** DARE version and cipher of new streams: the volume's settings (1.0, AES without a config). */
  version: Version;
  cipher: Cipher;
}

/** Asks for the secret as `mount` does and opens the volume: a wrong password fails here (exit 3). */
export async function unlockTree(cipherDir: string, o: TreeCommandOptions, command: string): Promise<UnlockedTree> {
  checkVolumeSecretOptions({ ncrypt: o.ncrypt, keyfile: o.keyfile, passfile: o.passfile, extpass: o.extpass, command });
  const secrets = await collectVolumeSecrets({ cipherDir, ncrypt: o.ncrypt, keyfile: o.keyfile, passfile: o.passfile, extpass: o.extpass, command });
  let opened: OpenedVolume;
  try {
    opened = await openVolume({
      cipherDir,
      mode: o.ncrypt ? 'ncrypt' : 'auto',
      secrets,
      readOnly: true,
      kdf: o.kdf as MasterKdf | undefined,
      // One key per file, used once: keep few.
      maxKeys: 64,
    });
  } finally {
    wipeVolumeSecrets(secrets);
  }
  const config = opened.config;
  return {
    opened,
    version: config ? versionFromName(config.writeVersion) : Version.V10,
    cipher: config ? cipherFromName(config.cipher) : Cipher.AES_256_GCM,
  };
}

/** The volume's keys, for symlink targets (src/store/symlink.ts). */
function keySource(u: UnlockedTree): KeySource {
  return { key: (prefix) => u.opened.keys.get(prefix) };
}

/**
 * Opens a cipher file by path, or, given the cipher directory, confined beneath it (no
 * symlink followed, a regular file only: FORMAT.md §6).
 */
async function openHandle(file: string, confined?: { dir: CipherDir; rel: string }): Promise<fs.promises.FileHandle> {
  if (!confined) return fs.promises.open(file, 'r');
  return confined.dir.openHandle(confined.rel, fs.constants.O_RDONLY);
}

/** Opens a cipher file: its 32-byte prefix, and the stream after it. */
async function openCipherFile(file: string, confined?: { dir: CipherDir; rel: string }): Promise<{ prefix: Buffer; body: fs.ReadStream } | 'empty'> {
  const h = await openHandle(file, confined);
  try {
    const prefix = Buffer.alloc(PREFIX_SIZE);
    const { bytesRead } = await h.read(prefix, 0, PREFIX_SIZE, 0);
    // 0 bytes: a file created and never written (or a crash before its first checkpoint), an
    // empty file as the mount shows it.
    if (bytesRead === 0) {
      await h.close();
      return 'empty';
    }
    if (bytesRead < PREFIX_SIZE) throw new ShortPrefixError(bytesRead).inFile(file);
    return { prefix, body: h.createReadStream({ start: PREFIX_SIZE, highWaterMark: IO_CHUNK }) };
  } catch (err) {
    await h.close();
    throw err;
  }
}

async function* withPrefix(prefix: Buffer, rest: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  yield prefix;
  yield* rest;
}

/** Decrypts `file` fully; yields verified plaintext. DARE errors name the file. */
async function* decryptFile(file: string, u: UnlockedTree, confined?: { dir: CipherDir; rel: string }): AsyncGenerator<Buffer> {
  const opened = await openCipherFile(file, confined);
  if (opened === 'empty') return;
  const { prefix, body } = opened;
  try {
    const key = await u.opened.keys.get(prefix);
    try {
      yield* decryptStream(body, key);
    } finally {
      key.fill(0);
    }
  } catch (err) {
    if (err instanceof DareError && err.file === undefined) err.inFile(file);
    throw err;
  } finally {
    body.destroy();
  }
}

/**
 * PLAINDIR → CIPHERDIR: each file becomes a fresh stream (new prefix, so a new key). A cipher
 * file already there is read confined beneath the cipher directory (the volume's CipherDir).
 */
export function importCodec(u: UnlockedTree): FileCodec {
  const dir = u.opened.volume.dir;
  return {
    destinationSize: (_src, e) => cipherSize(Number(e.stat.size)),
    progressBytes: (e) => Number(e.stat.size),
    async transform(src, out, e, onBytes, signal) {
      const prefix = randomBytes(PREFIX_SIZE);
      const key = await u.opened.keys.get(prefix);
      let read = 0;
      try {
        const plain = counting(readPlain(src), (n) => {
          read += n;
          onBytes(n);
        }, signal);
        await writeAll(out, withPrefix(prefix, encryptStream(plain, key, { version: u.version, cipher: u.cipher })), signal);
      } finally {
        key.fill(0);
      }
      const size = Number(e.stat.size);
      if (read !== size) {
        throw new CliError(`${src} changed while it was being encrypted (${read} bytes read, ${size} expected): run the import again`, ExitCode.ERROR);
      }
    },
    async verify(_src, dst, e, onBytes, signal) {
      let n = 0;
      try {
        for await (const chunk of counting(decryptFile(dst, u, { dir, rel: e.dst }), onBytes, signal)) n += chunk.length;
      } catch (err) {
        if (err instanceof DareError) return err.message;
        throw err;
      }
      const size = Number(e.stat.size);
      return n === size ? true : `it decrypts to ${n} bytes instead of ${size}`;
    },
    sourceLinkTarget: async (stored) => stored,
    destinationLinkTarget: (plain) => sealLink(keySource(u), u.cipher, plain),
    async destinationLinkHolds(stored, plain) {
      try {
        return (await openLink(keySource(u), stored, '')).equals(plain);
      } catch (err) {
        if (err instanceof SealedLinkError) return false;
        throw err;
      }
    },
  };
}

/**
 * CIPHERDIR → PLAINDIR: each stream decrypted; only authenticated plaintext is written. Cipher
 * files and symlinks are read confined beneath the cipher directory (the volume's CipherDir).
 */
export function exportCodec(u: UnlockedTree): FileCodec {
  const dir = u.opened.volume.dir;
  return {
    destinationSize(src, e) {
      // A 0-byte cipher file is an empty file (see openCipherFile).
      if (Number(e.stat.size) === 0) return 0;
      try {
        return plaintextSize(Number(e.stat.size));
      } catch (err) {
        if (err instanceof DareError) err.inFile(src);
        throw err;
      }
    },
    progressBytes: (e) => plaintextSizeOrUndefined(Number(e.stat.size)) ?? 0,
    async transform(src, out, e, onBytes, signal) {
      await writeAll(out, counting(decryptFile(src, u, { dir, rel: e.rel }), onBytes, signal), signal);
    },
    async verify(src, dst, e, onBytes, signal) {
      const h = await fs.promises.open(fsPath(dst), 'r');
      try {
        let pos = 0;
        for await (const chunk of counting(decryptFile(src, u, { dir, rel: e.rel }), onBytes, signal)) {
          const mine = Buffer.allocUnsafe(chunk.length);
          const { bytesRead } = await h.read(mine, 0, chunk.length, pos);
          if (bytesRead !== chunk.length || !mine.equals(chunk)) return `its content differs from the decrypted ${src}`;
          pos += chunk.length;
        }
        const st = await h.stat();
        return st.size === pos ? true : `it is longer than the decrypted ${src}`;
      } finally {
        await h.close();
      }
    },
    // A symlink that is not sealed or does not authenticate fails, named, as a damaged file does.
    sourceLinkTarget: (stored, src) => openLink(keySource(u), stored, src),
    destinationLinkTarget: async (plain) => plain,
    destinationLinkHolds: async (stored, plain) => stored.equals(plain),
  };
}

/**
 * Prints the summary; with failures, throws so the run exits non-zero: with the failures' own
 * exit code when they all share one (6 for modified packages), else 1.
 */
export function finishTreeCommand(command: string, summary: CopySummary, quiet: boolean): number {
  if (!quiet) process.stderr.write(`darefs: ${command}: ${formatSummary(summary)}\n`);
  const failed = summary.filesFailed + summary.otherErrors;
  if (failed === 0) return ExitCode.OK;
  const codes = new Set(summary.failures.map((f) => exitCodeFor(f.error)));
  const code = codes.size === 1 ? [...codes][0] : ExitCode.ERROR;
  const what = summary.filesFailed > 0 ? `${summary.filesFailed} file${summary.filesFailed === 1 ? '' : 's'}` : `${failed} entr${failed === 1 ? 'y' : 'ies'}`;
  throw new CliError(`${what} could not be ${command}ed (listed above); the rest is done: fix the cause and run the ${command} again to finish`, code);
}
