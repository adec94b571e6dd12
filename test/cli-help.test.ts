/**
 * The CLI's conventions: --help for darefs and for each command, --version, unknown commands
 * and options named with a suggestion, usage errors exit 2 without a stack trace.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAIN, runCli } from './helpers/cli';

const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };

test('darefs --help lists the commands, the environment and the exit codes', async (t) => {
  const r = await runCli(['--help']);
  t.is(r.code, 0);
  const out = r.stdout.toString();
  for (const cmd of ['init', 'encrypt', 'decrypt', 'help']) t.regex(out, new RegExp(`^  ${cmd} `, 'm'));
  t.regex(out, /DAREFS_PASSWORD/);
  for (const code of [0, 1, 2, 3, 4, 5, 6, 7, 130]) t.regex(out, new RegExp(`^ +${code}  \\S`, 'm'));
  t.is(r.stderr, '');
});

test('darefs with no command prints the help to stderr and exits 2', async (t) => {
  const r = await runCli([]);
  t.is(r.code, 2);
  t.regex(r.stderr, /Usage: darefs COMMAND/);
});

test('--version and -V print the package version', async (t) => {
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag]);
    t.is(r.code, 0);
    t.is(r.stdout.toString(), `darefs ${pkg.version}\n`);
  }
});

for (const cmd of ['init', 'encrypt', 'decrypt']) {
  test(`darefs ${cmd} --help: usage, one line per option, examples, exit codes`, async (t) => {
    for (const args of [[cmd, '--help'], [cmd, '-h'], ['help', cmd], [cmd, '--force', 'x', '--help']]) {
      const r = await runCli(args);
      t.is(r.code, 0, args.join(' '));
      const out = r.stdout.toString();
      t.regex(out, new RegExp(`^Usage: darefs ${cmd} `));
      t.regex(out, /^Options:$/m);
      t.regex(out, /^ {2}-h, --help +show this help and exit$/m);
      t.regex(out, /^Examples:\n {2}(DAREFS_PASSWORD=\S+ )?darefs /m);
      t.regex(out, /^Exit codes:$/m);
      t.regex(out, /--passfile FILE/);
      for (const line of out.split('\n')) t.true(line.length <= 80, `line too long: ${line}`);
    }
  });
}

test('encrypt/decrypt help documents the key modes and the stdout rule', async (t) => {
  const enc = (await runCli(['encrypt', '--help'])).stdout.toString();
  for (const opt of ['--ncrypt', '--volume CIPHERDIR', '--keyfile FILE', '--kdf KDF', '--cipher CIPHER', '--dare-version V', '--extpass CMD', '-f, --force']) {
    t.true(enc.includes(opt), opt);
  }
  const dec = (await runCli(['decrypt', '--help'])).stdout.toString();
  t.regex(dec.replace(/\s+/g, ' '), /what was written before the failure \(verified packages only\) cannot be taken back/);
});

test('an unknown command names it and suggests the closest one', async (t) => {
  const r = await runCli(['decrpyt', 'x']);
  t.is(r.code, 2);
  t.is(r.stderr, "darefs: unknown command 'decrpyt' (did you mean 'decrypt'?); run 'darefs --help' for the list\n");
  const far = await runCli(['frobnicate']);
  t.is(far.code, 2);
  t.notRegex(far.stderr, /did you mean/);
});

test('an unknown option names it and suggests the right one', async (t) => {
  const cases: Array<[string[], string]> = [
    [['decrypt', '--pasfile', 'x'], '--passfile'],
    [['encrypt', '--chiper', 'aes'], '--cipher'],
    [['encrypt', '--dare-verison=2'], '--dare-version'],
    [['init', '--keyfiel', 'k', 'dir'], '--keyfile'],
    [['decrypt', '-passfile', 'x'], '--passfile'],
    [['encrypt', '--forec'], '--force'],
  ];
  for (const [args, suggestion] of cases) {
    const r = await runCli(args);
    t.is(r.code, 2, args.join(' '));
    const shown = args.find((a) => a.startsWith('-'))?.split('=')[0];
    t.true(r.stderr.startsWith(`darefs: ${args[0]}: unknown option ${shown} (did you mean ${suggestion}?)\n`), r.stderr);
    t.regex(r.stderr, new RegExp(`Run 'darefs ${args[0]} --help' for usage\\.\\n$`));
    t.notRegex(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('bad option values: a missing value, a value for a flag, an invalid choice', async (t) => {
  const missing = await runCli(['decrypt', '--passfile']);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /option --passfile needs a value \(FILE\)/);
  const flag = await runCli(['encrypt', '--force=yes']);
  t.is(flag.code, 2);
  t.regex(flag.stderr, /option --force takes no value/);
  const choice = await runCli(['encrypt', '--cipher', 'chacha20']);
  t.is(choice.code, 2);
  t.regex(choice.stderr, /invalid value 'chacha20' for --cipher: expected aes or chacha/);
  const twice = await runCli(['encrypt', '--cipher', 'aes', '--cipher=chacha']);
  t.is(twice.code, 2);
  t.regex(twice.stderr, /option --cipher given more than once/);
});

test('the compiled entry point keeps its shebang', (t) => {
  t.true(fs.readFileSync(MAIN, 'utf8').startsWith('#!/usr/bin/env node\n'));
});
