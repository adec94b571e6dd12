/**
 * The CLI's building blocks in process: the option parser, suggestions, the error → exit code
 * mapping, the 2.0 truncation probe and the progress line.
 */
import test from 'ava';
import { PassThrough } from 'node:stream';
import { closest, defineOptions, editDistance, parseArgs } from '../src/cli/args';
import { TruncationProbe } from '../src/cli/commands/decrypt';
import { CliError, exitCodeFor, markTruncated, messageFor, UsageError } from '../src/cli/errors';
import { ExitCode } from '../src/cli/exit-codes';
import { formatBytes, formatDuration, Progress, renderProgress } from '../src/cli/progress';
import {
  AuthenticationError,
  DataAfterFinalError,
  InvalidPayloadSizeError,
  NonceMismatchError,
  SequenceMismatchError,
  ShortPrefixError,
  TruncatedStreamError,
  UnsupportedCipherError,
  UnsupportedVersionError,
} from '../src/dare';
import { ConfigError, ConfigExistsError, KeyFileError, SecretRequiredError, WrongPasswordError } from '../src/keys';

const SPECS = defineOptions([
  { name: 'passfile', value: 'FILE', help: 'x' },
  { name: 'cipher', value: 'C', choices: ['aes', 'chacha'], help: 'x' },
  { name: 'force', short: 'f', help: 'x' },
  { name: 'out', short: 'o', value: 'FILE', help: 'x' },
] as const);

test('parseArgs: flags, --opt value, --opt=value, short options, positionals, - and --', (t) => {
  const p = parseArgs(['a', '--passfile', 'pf', '--cipher=chacha', '-f', '-', '-o', 'x', '--', '--force', '-z'], SPECS);
  t.deepEqual(p.positionals, ['a', '-', '--force', '-z']);
  t.is(p.options.passfile, 'pf');
  t.is(p.options.cipher, 'chacha');
  t.true(p.options.force);
  t.is(p.options.out, 'x');
  const empty = parseArgs([], SPECS);
  t.false(empty.options.force);
  t.is(empty.options.passfile, undefined);
  t.is(parseArgs(['--passfile=a=b'], SPECS).options.passfile, 'a=b');
  t.is(parseArgs(['--passfile='], SPECS).options.passfile, '');
});

test('parseArgs: usage errors name the problem and the command', (t) => {
  const e = t.throws(() => parseArgs(['--pasfile', 'x'], SPECS, 'decrypt'), { instanceOf: UsageError });
  t.is(e?.message, 'unknown option --pasfile (did you mean --passfile?)');
  t.is(e?.command, 'decrypt');
  t.is(exitCodeFor(e), 2);
  t.throws(() => parseArgs(['-x'], SPECS), { message: 'unknown option -x' });
  t.throws(() => parseArgs(['--cipher', 'des'], SPECS), { message: "invalid value 'des' for --cipher: expected aes or chacha (did you mean aes?)" });
  t.throws(() => parseArgs(['--out'], SPECS), { message: 'option --out needs a value (FILE)' });
  t.throws(() => parseArgs(['-o'], SPECS), { message: 'option -o needs a value (FILE)' });
  t.throws(() => parseArgs(['--force=1'], SPECS), { message: 'option --force takes no value' });
  t.throws(() => parseArgs(['-f', '--force'], SPECS), { message: 'option --force given more than once' });
});

test('edit distance and suggestions', (t) => {
  t.is(editDistance('', 'abc'), 3);
  t.is(editDistance('kitten', 'sitting'), 3);
  t.is(editDistance('encrpyt', 'encrypt'), 1, 'a transposition counts once');
  t.is(closest('decrpyt', ['init', 'encrypt', 'decrypt']), 'decrypt');
  t.is(closest('pasfile', ['passfile', 'extpass']), 'passfile');
  t.is(closest('keyf', ['keyfile', 'kdf']), 'keyfile', 'a unique prefix');
  t.is(closest('zzzzzz', ['passfile', 'extpass']), undefined);
});

test('exitCodeFor: every error kind maps to its documented code', (t) => {
  const cases: Array<[unknown, number]> = [
    [new AuthenticationError(0), ExitCode.WRONG_KEY],
    [new AuthenticationError(3), ExitCode.CORRUPTED],
    [new ShortPrefixError(20), ExitCode.NOT_DARE],
    [new UnsupportedVersionError(0, 0x30), ExitCode.NOT_DARE],
    [new UnsupportedVersionError(2, 0x30), ExitCode.CORRUPTED],
    [new UnsupportedCipherError(0, 2), ExitCode.NOT_DARE],
    [new UnsupportedCipherError(1, 2), ExitCode.CORRUPTED],
    [new TruncatedStreamError(2), ExitCode.TRUNCATED],
    [new InvalidPayloadSizeError(1, 'truncated package'), ExitCode.TRUNCATED],
    [new InvalidPayloadSizeError(1, 'package length does not match its header'), ExitCode.CORRUPTED],
    [new SequenceMismatchError(1, 5), ExitCode.CORRUPTED],
    [new NonceMismatchError(1), ExitCode.CORRUPTED],
    [new DataAfterFinalError(3), ExitCode.CORRUPTED],
    [new WrongPasswordError('/v'), ExitCode.WRONG_KEY],
    [new KeyFileError('/k', 'bad key file'), ExitCode.WRONG_KEY],
    [new KeyFileError('/k', 'cannot read', { cause: Object.assign(new Error('x'), { code: 'ENOENT', errno: -2, syscall: 'open' }) }), ExitCode.ERROR],
    [new ConfigError('/v/.darefs/config.json', 'bad'), ExitCode.VOLUME],
    [new ConfigExistsError('/v/.darefs/config.json'), ExitCode.VOLUME],
    [new SecretRequiredError('/v', 'keyfile'), ExitCode.USAGE],
    [new UsageError('x'), ExitCode.USAGE],
    [new CliError('x', 42), 42],
    [Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES', errno: -13, syscall: 'open', path: '/x' }), ExitCode.ERROR],
    [new Error('a bug'), ExitCode.ERROR],
  ];
  for (const [err, code] of cases) t.is(exitCodeFor(err), code, String(err));
  const marked = new InvalidPayloadSizeError(1, 'package length does not match its header');
  markTruncated(marked);
  t.is(exitCodeFor(marked), ExitCode.TRUNCATED);
});

test('messageFor: package 0 authentication says wrong password first; errno errors name the path', (t) => {
  t.is(
    messageFor(new AuthenticationError(0).inFile('notes.txt.enc')),
    'authentication failed in package 0 of notes.txt.enc: wrong password or key (or package 0 of notes.txt.enc is corrupted)',
  );
  t.is(
    messageFor(new AuthenticationError(3).inFile('notes.txt.enc')),
    'authentication failed in package 3 of notes.txt.enc: wrong password or key, or the file was modified',
  );
  const errno = Object.assign(new Error('x'), { code: 'EACCES', errno: -13, syscall: 'open', path: '/secret/x' });
  t.is(messageFor(errno), 'open /secret/x: permission denied (EACCES)');
  t.regex(messageFor(new Error('boom')), /^unexpected error: boom \(run with DAREFS_DEBUG=1 for details\)$/);
});

function v20Stream(sizes: number[], declared?: number[]): Buffer {
  // prefix, then packages of `sizes` payload bytes whose header length field says `declared`.
  const parts = [Buffer.alloc(32, 7)];
  sizes.forEach((size, i) => {
    const header = Buffer.alloc(16);
    header[0] = 0x20;
    header.writeUInt16LE((declared?.[i] ?? size) - 1, 2);
    parts.push(header, Buffer.alloc(size + 16));
  });
  return Buffer.concat(parts);
}

test('TruncationProbe: a short last package is a truncation, a long one is not; chunking does not matter', (t) => {
  const full = v20Stream([65536, 65536, 1000]);
  for (const chunk of [1, 3, 1000, 65568, 1 << 20]) {
    const cut = full.subarray(0, full.length - 10);
    const probe = new TruncationProbe();
    for (let i = 0; i < cut.length; i += chunk) probe.see(cut.subarray(i, i + chunk));
    probe.end();
    t.true(probe.isTruncation(new InvalidPayloadSizeError(2)), `chunk ${chunk}`);
    t.false(probe.isTruncation(new InvalidPayloadSizeError(1)), 'not the last package');

    const appended = Buffer.concat([full, Buffer.from('GARBAGE')]);
    const p2 = new TruncationProbe();
    for (let i = 0; i < appended.length; i += chunk) p2.see(appended.subarray(i, i + chunk));
    p2.end();
    t.false(p2.isTruncation(new InvalidPayloadSizeError(2)), `appended, chunk ${chunk}`);
  }
  const notEnded = new TruncationProbe();
  notEnded.see(full.subarray(0, full.length - 10));
  t.false(notEnded.isTruncation(new InvalidPayloadSizeError(2)), 'only once the input ended');
  const v10 = Buffer.from(full);
  v10[32] = 0x10;
  const p3 = new TruncationProbe();
  p3.see(v10.subarray(0, v10.length - 10));
  p3.end();
  t.false(p3.isTruncation(new InvalidPayloadSizeError(2)), '2.0 only');
});

test('progress: formatting, and nothing drawn when disabled or not a terminal', async (t) => {
  t.is(formatBytes(0), '0 B');
  t.is(formatBytes(1536), '1.50 KiB');
  t.is(formatBytes(200 * 1024 * 1024), '200 MiB');
  t.is(formatDuration(75), '1:15');
  t.is(formatDuration(3725), '1:02:05');
  t.is(formatDuration(Infinity), '--:--');
  t.is(
    renderProgress({ label: 'decrypt big.enc', done: 512 * 1024 * 1024, total: 1024 * 1024 * 1024, elapsedMs: 2000 }),
    'decrypt big.enc: 512 MiB of 1.00 GiB (50%), 256 MiB/s, ETA 0:02',
  );
  t.is(renderProgress({ label: 'x', done: 1024, elapsedMs: 1000 }), 'x: 1.00 KiB, 1.00 KiB/s');

  const sink = new PassThrough();
  let written = '';
  sink.on('data', (b: Buffer) => (written += b.toString()));
  const asTty = Object.assign(sink, { isTTY: true, columns: 40 }) as unknown as NodeJS.WriteStream;
  const p = new Progress({ label: 'encrypt f', total: 100, stream: asTty, delayMs: 0, intervalMs: 10 });
  p.add(50);
  await new Promise((r) => setTimeout(r, 60));
  p.stop();
  t.regex(written, /^\rencrypt f: 50 B of 100 B \(50%\)/);
  t.true(written.endsWith('\r\x1b[K'), 'the line is erased at the end');
  for (const line of written.split('\r')) t.true(line.replace('\x1b[K', '').length < 40);

  const quiet = new PassThrough();
  let quietOut = '';
  quiet.on('data', (b: Buffer) => (quietOut += b.toString()));
  const q = new Progress({ label: 'x', stream: quiet as unknown as NodeJS.WriteStream, delayMs: 0, intervalMs: 10 });
  await new Promise((r) => setTimeout(r, 40));
  q.stop();
  t.is(quietOut, '', 'silent when the stream is not a terminal');
});
