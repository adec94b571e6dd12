// `darefs encrypt [IN [OUT]]`: one file to a DARE stream (sio/ncrypt format),
// `prefix (32 random bytes) || packages`. Also home of the streaming plumbing
// that `decrypt` shares: input, output file with removal on failure, signals,
// progress.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Cipher, encryptStream, PREFIX_SIZE, Version } from '../../dare';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { CliError, InterruptedError, UsageError, ioError, isErrno } from '../errors';
import { ExitCode } from '../exit-codes';
import { Progress } from '../progress';
import { checkKeyModeOptions, KEY_MODE_OPTIONS, resolveKeys } from '../secrets';

// ---------------------------------------------------------------------------
// Shared streaming plumbing (encrypt and decrypt)
// ---------------------------------------------------------------------------

export const STDIO_NAME = 'standard input';
export const READ_CHUNK = 1024 * 1024;
const WRITE_BATCH = 1024 * 1024;

export const IO_OPTIONS = defineOptions([
  { name: 'force', short: 'f', help: 'overwrite OUT if it exists' },
  { name: 'quiet', short: 'q', help: 'no progress line and no warnings on stderr' },
] as const);

function fstatFd(fd: number): Promise<fs.Stats | undefined> {
  return new Promise((resolve) => fs.fstat(fd, (err, st) => resolve(err ? undefined : st)));
}

export interface Input {
  /** For messages: the path as given, or "standard input". */
  name: string;
  stream: Readable;
  /** Byte size when the input is a regular file. */
  size?: number;
  stats?: fs.Stats;
}

/** Opens IN ('-' for standard input). Errors name the path; exit code 1. */
export async function openInput(file: string, opts: { refuseTerminal?: string; command: string }): Promise<Input> {
  if (file === '-') {
    if (opts.refuseTerminal !== undefined && process.stdin.isTTY) throw new UsageError(opts.refuseTerminal, opts.command);
    const st = await fstatFd(0);
    return { name: STDIO_NAME, stream: process.stdin, size: st?.isFile() ? st.size : undefined, stats: st };
  }
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, 'r');
  } catch (err) {
    throw ioError(err, 'cannot open input', file);
  }
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw new CliError(`input ${file} is a directory: give a file`, ExitCode.ERROR);
    const stream = handle.createReadStream({ highWaterMark: READ_CHUNK, autoClose: true });
    return { name: file, stream, size: st.isFile() ? st.size : undefined, stats: st };
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw ioError(err, 'cannot read input', file);
  }
}

/** Where the output goes: a file (removed on failure) or standard output. */
export interface Output {
  name: string;
  /** Consumes the whole stream (the last pipeline stage). */
  sink(source: AsyncIterable<Buffer>): Promise<void>;
  /** Flushes to stable storage (fsync) and closes. */
  commit(): Promise<void>;
  /** After a failure: closes and removes what was written, when it is ours to remove. */
  discard(): Promise<void>;
}

async function writeAll(handle: fs.promises.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await handle.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

/**
 * OUT as a file. Opened lazily, at the first byte of output (or at commit for
 * an empty output), so a run that fails early (wrong password) never creates
 * it. On any failure the file is removed: no partial output is left behind.
 */
class FileOutput implements Output {
  private handle: fs.promises.FileHandle | undefined;
  private ours = false;
  private identity: { dev: number; ino: number } | undefined;

  constructor(
    readonly name: string,
    private readonly force: boolean,
    private readonly mode: number,
    /** Give OUT exactly `mode` even when --force reuses an existing file (decrypt: plaintext is 0600). */
    private readonly exactMode: boolean,
  ) {}

  private async open(): Promise<fs.promises.FileHandle> {
    if (this.handle !== undefined) return this.handle;
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(this.name, this.force ? 'w' : 'wx', this.mode);
    } catch (err) {
      if (isErrno(err) && err.code === 'EEXIST') throw existsError(this.name);
      throw ioError(err, 'cannot create output', this.name);
    }
    this.handle = handle;
    const st = await handle.stat();
    // Only a regular file we created or truncated is ours to remove; never /dev/null or a FIFO.
    this.ours = st.isFile();
    this.identity = { dev: st.dev, ino: st.ino };
    if (this.exactMode && this.ours && (st.mode & 0o7777) !== this.mode) {
      // On the fd, before the first byte: a file that existed keeps its old mode through open(),
      // and plaintext must not land in a world-readable file.
      try {
        await handle.chmod(this.mode);
      } catch (err) {
        this.handle = undefined;
        await handle.close().catch(() => undefined);
        throw ioError(err, `cannot make output mode ${this.mode.toString(8).padStart(4, '0')}`, this.name);
      }
    }
    return handle;
  }

  sink = async (source: AsyncIterable<Buffer>): Promise<void> => {
    // Packages are gathered into ~1 MiB writes: one system call per package costs throughput.
    let batch: Buffer[] = [];
    let batched = 0;
    const flush = async (): Promise<void> => {
      const handle = await this.open();
      const bufs = batch;
      batch = [];
      batched = 0;
      try {
        await writeAll(handle, bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
      } catch (err) {
        throw ioError(err, 'cannot write output', this.name);
      }
    };
    for await (const chunk of source) {
      // OUT is created (or truncated, with --force) at the first output byte, not at the first flush.
      await this.open();
      batch.push(chunk);
      batched += chunk.length;
      if (batched >= WRITE_BATCH) await flush();
    }
    if (batched > 0) await flush();
  };

  async commit(): Promise<void> {
    const handle = await this.open();
    try {
      if (this.ours) await handle.sync();
    } catch (err) {
      throw ioError(err, 'cannot flush output', this.name);
    }
    this.handle = undefined;
    try {
      await handle.close();
    } catch (err) {
      throw ioError(err, 'cannot close output', this.name);
    }
    if (this.ours) {
      // Make the new name durable too; best effort (some file systems refuse fsync on directories).
      const dir = await fs.promises.open(path.dirname(path.resolve(this.name)), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY).catch(() => undefined);
      if (dir !== undefined) {
        await dir.sync().catch(() => undefined);
        await dir.close().catch(() => undefined);
      }
    }
  }

  async discard(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    if (handle !== undefined) await handle.close().catch(() => undefined);
    if (!this.ours || this.identity === undefined) return;
    // Remove it only if the name still refers to the file we wrote.
    const st = await fs.promises.lstat(this.name).catch(() => undefined);
    if (st !== undefined && st.dev === this.identity.dev && st.ino === this.identity.ino) {
      await fs.promises.unlink(this.name).catch(() => undefined);
    }
  }
}

/**
 * Standard output. Whatever was written before a failure cannot be taken
 * back; decrypt writes a package's plaintext only after its tag verified.
 */
export class StdoutOutput implements Output {
  readonly name = 'standard output';

  sink = async (source: AsyncIterable<Buffer>): Promise<void> => {
    const out = process.stdout;
    let failure: Error | undefined;
    const onError = (err: Error): void => {
      failure = err;
    };
    out.on('error', onError);
    try {
      for await (const chunk of source) {
        if (failure !== undefined) break;
        if (!out.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              out.off('drain', done);
              out.off('error', done);
              out.off('close', done);
              resolve();
            };
            out.on('drain', done);
            out.on('error', done);
            out.on('close', done);
          });
        }
      }
      if (failure !== undefined) throw ioError(failure, 'cannot write to', 'standard output');
    } finally {
      out.off('error', onError);
    }
  };

  async commit(): Promise<void> {
    // When stdout is redirected to a regular file, make it durable as well.
    const st = await fstatFd(1);
    if (st?.isFile()) {
      await new Promise<void>((resolve) => fs.fsync(1, () => resolve()));
    }
  }

  async discard(): Promise<void> {
    // Nothing can be taken back from standard output.
  }
}

function existsError(file: string): CliError {
  return new CliError(`output ${file} already exists: use --force to overwrite it`, ExitCode.ERROR);
}

/**
 * Checks OUT before any work: refuses an existing OUT without --force, a
 * directory, and the input file itself ('-' is standard output).
 */
export async function prepareOutput(
  file: string,
  opts: { force: boolean; input: Input; mode: number; exactMode?: boolean; refuseTerminal?: string; command: string },
): Promise<Output> {
  if (file === '-') {
    if (opts.refuseTerminal !== undefined && process.stdout.isTTY) throw new UsageError(opts.refuseTerminal, opts.command);
    return new StdoutOutput();
  }
  const st = await fs.promises.stat(file).catch((err: unknown) => {
    if (isErrno(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return undefined;
    throw ioError(err, 'cannot use output', file);
  });
  if (st !== undefined) {
    if (st.isDirectory()) throw new CliError(`output ${file} is a directory: give a file name`, ExitCode.ERROR);
    const ist = opts.input.stats;
    if (ist !== undefined && ist.dev === st.dev && ist.ino === st.ino) {
      throw new UsageError(`input and output are the same file (${file}): write to another file`, opts.command);
    }
    if (!opts.force) throw existsError(file);
  }
  return new FileOutput(file, opts.force, opts.mode, opts.exactMode ?? false);
}

export type Stage = (source: AsyncIterable<Buffer>) => AsyncIterable<Buffer>;

/**
 * input → (count bytes, progress) → stage → output, with backpressure and
 * bounded memory. On any failure, including Ctrl-C, the output file is removed.
 */
export async function runStream(opts: {
  label: string;
  input: Input;
  output: Output;
  stage: Stage;
  quiet: boolean;
  /** Sees each input chunk (decrypt's length probe). */
  tap?: (chunk: Buffer) => void;
  /** Called when the input ended. */
  onInputEnd?: () => void;
}): Promise<void> {
  const { input, output } = opts;
  const controller = new AbortController();
  let signal: 'SIGINT' | 'SIGTERM' | 'SIGHUP' | undefined;
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((name) => {
    const handler = (): void => {
      signal ??= name;
      controller.abort();
    };
    process.on(name, handler);
    return [name, handler] as const;
  });
  const progress = new Progress({ label: opts.label, total: input.size, enabled: opts.quiet ? false : undefined });
  const counted = async function* (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of source) {
        progress.add(chunk.length);
        opts.tap?.(chunk);
        yield chunk;
      }
    } catch (err) {
      throw ioError(err, 'cannot read input', input.name);
    }
    opts.onInputEnd?.();
  };
  try {
    await pipeline(input.stream, counted, opts.stage, output.sink, { signal: controller.signal });
    if (signal !== undefined) throw new InterruptedError(signal);
    await output.commit();
  } catch (err) {
    await output.discard();
    if (signal !== undefined) throw new InterruptedError(signal);
    throw err;
  } finally {
    progress.stop();
    for (const [name, handler] of handlers) process.off(name, handler);
    if (input.stream !== process.stdin) input.stream.destroy();
  }
}

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

const OPTIONS = defineOptions([
  ...KEY_MODE_OPTIONS,
  { name: 'cipher', value: 'CIPHER', choices: ['aes', 'chacha'], help: 'aes (AES-256-GCM, default) or chacha (ChaCha20-Poly1305)' },
  { name: 'dare-version', value: 'V', choices: ['1', '2', '1.0', '2.0'], help: 'DARE version of the stream: 2 (default, like sio) or 1' },
  ...IO_OPTIONS,
] as const);

function parseVersion(v: string | undefined): Version | undefined {
  if (v === undefined) return undefined;
  return v.startsWith('1') ? Version.V10 : Version.V20;
}

function parseCipher(c: string | undefined): Cipher | undefined {
  if (c === undefined) return undefined;
  return c === 'aes' ? Cipher.AES_256_GCM : Cipher.CHACHA20_POLY1305;
}

export const encryptCommand: Command = {
  name: 'encrypt',
  summary: 'encrypt one file to the DARE format (compatible with sio ncrypt)',
  usage: ['encrypt [options] [IN [OUT]]'],
  description:
    'Encrypts IN (default: standard input, also "-") to OUT (default: standard output, also "-"): ' +
    'a random 32-byte prefix, then DARE packages. The key is derived from the prefix: ' +
    "scrypt(password, prefix) in ncrypt mode (the default; the file decrypts with sio's `ncrypt -d`), " +
    'HMAC-SHA256(master key, prefix) in master mode (--volume or --keyfile). ' +
    'With --volume the cipher and DARE version default to the volume settings. ' +
    'An existing OUT is not overwritten without --force; OUT is synced to disk before success and removed on any failure. ' +
    'Password sources, in order: --passfile, --extpass, $DAREFS_PASSWORD, a prompt on the terminal.',
  options: OPTIONS,
  examples: [
    'darefs encrypt notes.txt notes.txt.enc',
    'darefs encrypt --passfile ~/.pw --cipher chacha < notes.txt > notes.txt.enc',
    'darefs encrypt --keyfile master.key notes.txt notes.txt.enc',
    'darefs encrypt --volume ~/cipher notes.txt ~/cipher/notes.txt',
  ],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'encrypt');
    expectPositionals(positionals, 0, 2, '[IN [OUT]]', 'encrypt');
    const keyOpts = { ncrypt: o.ncrypt, volume: o.volume, keyfile: o.keyfile, kdf: o.kdf, passfile: o.passfile, extpass: o.extpass, command: 'encrypt' };
    checkKeyModeOptions(keyOpts);

    const input = await openInput(positionals[0] ?? '-', { command: 'encrypt' });
    let keys: Awaited<ReturnType<typeof resolveKeys>> | undefined;
    try {
      const output = await prepareOutput(positionals[1] ?? '-', {
        force: o.force,
        input,
        mode: 0o666,
        refuseTerminal: 'refusing to write encrypted data to a terminal: give OUT or redirect standard output',
        command: 'encrypt',
      });
      keys = await resolveKeys(keyOpts);
      const deriver = keys.deriver;
      const config = keys.config;
      const version =
        parseVersion(o['dare-version']) ?? (config !== undefined ? (config.writeVersion === '1.0' ? Version.V10 : Version.V20) : Version.V20);
      const cipher = parseCipher(o.cipher) ?? (config !== undefined ? parseCipher(config.cipher) : undefined) ?? Cipher.AES_256_GCM;

      const stage: Stage = async function* (source) {
        const prefix = randomBytes(PREFIX_SIZE);
        const key = await deriver.derive(prefix);
        try {
          yield prefix;
          yield* encryptStream(source, key, { version, cipher });
        } finally {
          key.fill(0);
        }
      };
      await runStream({ label: `encrypt ${input.name}`, input, output, stage, quiet: o.quiet });
      return ExitCode.OK;
    } catch (err) {
      if (input.stream !== process.stdin) input.stream.destroy();
      throw err;
    } finally {
      keys?.deriver.dispose();
    }
  },
};
