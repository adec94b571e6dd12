// `darefs decrypt [IN [OUT]]`: a DARE file (sio/ncrypt format) back to its
// plaintext. Reads the 32-byte prefix, derives the key, then streams the
// packages through decryptStream, which releases a package's plaintext only
// after its tag verified.

import { DareError, decryptStream, InvalidPayloadSizeError, MAX_PACKAGE, PACKAGE_OVERHEAD, PREFIX_SIZE, ShortPrefixError, Version } from '../../dare';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { markTruncated } from '../errors';
import { ExitCode } from '../exit-codes';
import { checkKeyModeOptions, KEY_MODE_OPTIONS, resolveKeys, type ResolvedKeys } from '../secrets';
import { IO_OPTIONS, openInput, prepareOutput, runStream, type Stage } from './encrypt';

const OPTIONS = defineOptions([...KEY_MODE_OPTIONS, ...IO_OPTIONS] as const);

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

/** Splits the first PREFIX_SIZE bytes off a byte stream. */
async function splitPrefix(source: AsyncIterable<Buffer>): Promise<{ prefix: Buffer; rest: AsyncGenerator<Buffer> }> {
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
  usage: ['decrypt [options] [IN [OUT]]'],
  description:
    'Decrypts IN (default: standard input, also "-") to OUT (default: standard output, also "-"). ' +
    'DARE 1.0 and 2.0, AES-256-GCM and ChaCha20-Poly1305 are recognized from the file. ' +
    'Key modes as for encrypt: --ncrypt (default, password), --volume CIPHERDIR, --keyfile FILE. ' +
    'Only plaintext of packages whose tag verified is ever written. OUT is created (or, with --force, ' +
    'truncated) only when package 0 has verified, so a wrong password leaves it untouched; on any later failure OUT is removed, ' +
    'so no partial plaintext is left behind; on standard output, what was written before the failure ' +
    '(verified packages only) cannot be taken back: check the exit code. OUT gets mode 0600, also when --force ' +
    'overwrites an existing file.',
  options: OPTIONS,
  examples: [
    'darefs decrypt notes.txt.enc notes.txt',
    'darefs decrypt --passfile ~/.pw notes.txt.enc > notes.txt',
    'DAREFS_PASSWORD=... darefs decrypt notes.txt.enc notes.txt',
    'darefs decrypt --keyfile master.key notes.txt.enc notes.txt',
    'darefs decrypt --volume ~/cipher ~/cipher/notes.txt notes.txt',
  ],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'decrypt');
    expectPositionals(positionals, 0, 2, '[IN [OUT]]', 'decrypt');
    const keyOpts = { ncrypt: o.ncrypt, volume: o.volume, keyfile: o.keyfile, kdf: o.kdf, passfile: o.passfile, extpass: o.extpass, command: 'decrypt' };
    checkKeyModeOptions(keyOpts);

    const input = await openInput(positionals[0] ?? '-', {
      command: 'decrypt',
      refuseTerminal: 'refusing to read encrypted data from a terminal: give IN or redirect standard input',
    });
    let keys: ResolvedKeys | undefined;
    try {
      const output = await prepareOutput(positionals[1] ?? '-', { force: o.force, input, mode: 0o600, exactMode: true, command: 'decrypt' });
      keys = await resolveKeys(keyOpts);
      const deriver = keys.deriver;
      const probe = new TruncationProbe();
      const stage: Stage = async function* (source) {
        const { prefix, rest } = await splitPrefix(source);
        const key = await deriver.derive(prefix);
        try {
          yield* decryptStream(rest, key);
        } finally {
          key.fill(0);
        }
      };
      try {
        await runStream({
          label: `decrypt ${input.name}`,
          input,
          output,
          stage,
          quiet: o.quiet,
          tap: (chunk) => probe.see(chunk),
          onInputEnd: () => probe.end(),
        });
      } catch (err) {
        if (err instanceof DareError) {
          if (err.file === undefined) err.inFile(input.name);
          if (err instanceof InvalidPayloadSizeError && probe.isTruncation(err)) markTruncated(err);
        }
        throw err;
      }
      return ExitCode.OK;
    } catch (err) {
      if (input.stream !== process.stdin) input.stream.destroy();
      throw err;
    } finally {
      keys?.deriver.dispose();
    }
  },
};
