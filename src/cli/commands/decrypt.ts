// `darefs decrypt [IN [OUT]]`: a DARE file (sio/ncrypt format) back to its
// plaintext. Reads the 32-byte prefix, derives the key, then streams the
// packages through decryptStream, which releases a package's plaintext only
// after its tag verified.

import { DareError, decryptStream, InvalidPayloadSizeError, MAX_PACKAGE, PACKAGE_OVERHEAD, PREFIX_SIZE, ShortPrefixError, Version } from '../../dare';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { markTruncated, UsageError } from '../errors';
import { ExitCode } from '../exit-codes';
import { checkKeyModeOptions, KEY_MODE_OPTIONS, resolveKeys, type ResolvedKeys } from '../secrets';
import { checkPlainPath, openVolumeFile } from '../volume-path';
import { IO_OPTIONS, openInput, prepareOutput, READ_CHUNK, runStream, type Input, type Stage } from './encrypt';

const OPTIONS = defineOptions([
  ...KEY_MODE_OPTIONS,
  {
    name: 'path',
    value: 'PLAINPATH',
    help: "with --volume, instead of IN: the file at PLAINPATH in the volume's plaintext view (e.g. docs/report.pdf)",
  },
  ...IO_OPTIONS,
] as const);

/** The cipher file of PLAINPATH as the input; its 0 bytes, as in the plaintext view, an empty file. */
async function volumeInput(volume: string, plainRel: string, keys: ResolvedKeys): Promise<Input> {
  if (keys.names === undefined) throw new Error('resolveKeys gave no name scheme for --volume (internal error)');
  const file = await openVolumeFile(volume, plainRel, keys.names);
  const stream = file.handle.createReadStream({ highWaterMark: READ_CHUNK, autoClose: true });
  return { name: file.name, stream, size: file.stats.size, stats: file.stats };
}

/**
 * Watches the cipher bytes go by to tell a truncated 2.0 stream from a
 * corrupted one: when a package is shorter than its header's length field
 * and is the last thing in the input, the stream was cut (exit 5); when it is
 * longer (data appended, a wrong length field), it was modified (exit 6).
 * DARE 2.0 packages sit at fixed 65568-byte steps, so the length field of
 * package k is at input offset 32 + k*65568 + 2.
 */
export class TruncationProbe {
  private total = 0;
  private ended = false;
  private version: number | undefined;
  private index = -1;
  private lo: number | undefined;
  private hi: number | undefined;

  see(chunk: Buffer): void {
    const start = this.total;
    const end = start + chunk.length;
    if (this.version === undefined && start <= PREFIX_SIZE && end > PREFIX_SIZE) this.version = chunk[PREFIX_SIZE - start];
    for (let k = Math.max(0, Math.floor((start - PREFIX_SIZE - 3) / MAX_PACKAGE)); ; k++) {
      const p = PREFIX_SIZE + k * MAX_PACKAGE + 2;
      if (p >= end) break;
      if (p >= start) {
        this.index = k;
        this.lo = chunk[p - start];
        this.hi = undefined;
      }
      if (this.index === k && p + 1 >= start && p + 1 < end) this.hi = chunk[p + 1 - start];
    }
    this.total = end;
  }

  end(): void {
    this.ended = true;
  }

  /** Whether `err` comes from the input having been cut short. */
  isTruncation(err: InvalidPayloadSizeError): boolean {
    if (!this.ended || this.version !== Version.V20) return false;
    if (err.packageIndex !== this.index || this.lo === undefined || this.hi === undefined) return false;
    const declared = (this.lo | (this.hi << 8)) + 1;
    const actual = this.total - (PREFIX_SIZE + this.index * MAX_PACKAGE) - PACKAGE_OVERHEAD;
    return actual < declared;
  }
}

/** Splits the first PREFIX_SIZE bytes off a byte stream; 'empty' for no bytes at all, when `allowEmpty`. */
async function splitPrefix(source: AsyncIterable<Buffer>, allowEmpty: boolean): Promise<{ prefix: Buffer; rest: AsyncGenerator<Buffer> } | 'empty'> {
  const it = source[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let have = 0;
  let done = false;
  while (have < PREFIX_SIZE) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    head.push(r.value);
    have += r.value.length;
  }
  const first = Buffer.concat(head);
  if (first.length === 0 && allowEmpty) return 'empty';
  if (first.length < PREFIX_SIZE) throw new ShortPrefixError(first.length);
  const prefix = Buffer.from(first.subarray(0, PREFIX_SIZE));
  const leftover = first.subarray(PREFIX_SIZE);
  async function* rest(): AsyncGenerator<Buffer> {
    try {
      if (leftover.length > 0) yield leftover;
      while (!done) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    } finally {
      await it.return?.();
    }
  }
  return { prefix, rest: rest() };
}

export const decryptCommand: Command = {
  name: 'decrypt',
  summary: 'decrypt one DARE file (made by darefs encrypt or sio ncrypt)',
  usage: ['decrypt [options] [IN [OUT]]', 'decrypt --volume CIPHERDIR --path PLAINPATH [options] [OUT]'],
  description:
    'Decrypts IN (default: standard input, also "-") to OUT (default: standard output, also "-"). ' +
    'DARE 1.0 and 2.0, AES-256-GCM and ChaCha20-Poly1305 are recognized from the file. ' +
    'Key modes as for encrypt: --ncrypt (default, password), --volume CIPHERDIR, --keyfile FILE. ' +
    'Only plaintext of packages whose tag verified is ever written. OUT is created (or, with --force, ' +
    'truncated) only when package 0 has verified, so a wrong password leaves it untouched; on any later failure OUT is removed, ' +
    'so no partial plaintext is left behind; on standard output, what was written before the failure ' +
    '(verified packages only) cannot be taken back: check the exit code. OUT gets mode 0600, also when --force ' +
    'overwrites an existing file. With --volume CIPHERDIR, --path PLAINPATH names the file by its path in ' +
    "the volume's plaintext view, as the mount shows it (relative to its root, no '..'), instead of IN: the path " +
    'is mapped through the volume\'s names (encrypted ones too, init --encrypt-names) to its cipher file, which ' +
    'is opened beneath CIPHERDIR without following any symlink; a 0-byte cipher file is an empty file there. ' +
    'IN may still be the path of a cipher file itself, e.g. CIPHERDIR/<cipher name>.',
  options: OPTIONS,
  examples: [
    'darefs decrypt notes.txt.enc notes.txt',
    'darefs decrypt --passfile ~/.pw notes.txt.enc > notes.txt',
    'DAREFS_PASSWORD=... darefs decrypt notes.txt.enc notes.txt',
    'darefs decrypt --keyfile master.key notes.txt.enc notes.txt',
    'darefs decrypt --volume ~/cipher ~/cipher/notes.txt notes.txt',
    'darefs decrypt --volume ~/vault --path docs/report.pdf report.pdf',
  ],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'decrypt');
    const volume = o.volume;
    if (o.path !== undefined && volume === undefined) {
      throw new UsageError("--path needs --volume CIPHERDIR: PLAINPATH is a path in that volume's plaintext view", 'decrypt');
    }
    if (o.path !== undefined) expectPositionals(positionals, 0, 1, '[OUT]', 'decrypt');
    else expectPositionals(positionals, 0, 2, '[IN [OUT]]', 'decrypt');
    const keyOpts = { ncrypt: o.ncrypt, volume, keyfile: o.keyfile, kdf: o.kdf, passfile: o.passfile, extpass: o.extpass, command: 'decrypt' };
    checkKeyModeOptions(keyOpts);
    const plainRel = o.path === undefined ? undefined : checkPlainPath(o.path, 'decrypt');

    let keys: ResolvedKeys | undefined;
    let input: Input | undefined;
    try {
      // By PLAINPATH, the name needs the volume's keys first.
      if (plainRel !== undefined && volume !== undefined) {
        keys = await resolveKeys({ ...keyOpts, names: true });
        input = await volumeInput(volume, plainRel, keys);
      } else {
        input = await openInput(positionals[0] ?? '-', {
          command: 'decrypt',
          refuseTerminal: 'refusing to read encrypted data from a terminal: give IN or redirect standard input',
        });
      }
      const outFile = plainRel === undefined ? positionals[1] : positionals[0];
      const output = await prepareOutput(outFile ?? '-', { force: o.force, input, mode: 0o600, exactMode: true, command: 'decrypt' });
      keys ??= await resolveKeys(keyOpts);
      const deriver = keys.deriver;
      const probe = new TruncationProbe();
      const stage: Stage = async function* (source) {
        const split = await splitPrefix(source, plainRel !== undefined);
        if (split === 'empty') return;
        const { prefix, rest } = split;
        const key = await deriver.derive(prefix);
        try {
          yield* decryptStream(rest, key);
        } finally {
          key.fill(0);
        }
      };
      const running = input;
      try {
        await runStream({
          label: `decrypt ${running.name}`,
          input: running,
          output,
          stage,
          quiet: o.quiet,
          tap: (chunk) => probe.see(chunk),
          onInputEnd: () => probe.end(),
        });
      } catch (err) {
        if (err instanceof DareError) {
          if (err.file === undefined) err.inFile(running.name);
          if (err instanceof InvalidPayloadSizeError && probe.isTruncation(err)) markTruncated(err);
        }
        throw err;
      }
      return ExitCode.OK;
    } catch (err) {
      if (input !== undefined && input.stream !== process.stdin) input.stream.destroy();
      throw err;
    } finally {
      keys?.deriver.dispose();
      keys?.names?.dispose();
    }
  },
};
