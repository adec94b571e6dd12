// Help texts: `darefs --help`, `darefs COMMAND --help` and `darefs help [COMMAND]`,
// all generated from the command registry and the option specs.

import { closest, didYouMean, HELP_OPTION, type Command, type OptionSpec } from '../args';
import { UsageError } from '../errors';
import { EXIT_CODE_HELP, ExitCode } from '../exit-codes';

/** Greedy word wrap to `width` columns, continuation lines indented by `indent`. */
export function wrap(text: string, width: number, indent = ''): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w.length > 0)) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      lines.push(line);
      line = indent + word;
    } else {
      line = line.length === 0 ? (lines.length === 0 ? word : indent + word) : `${line} ${word}`;
    }
  }
  if (line.length > 0) lines.push(line);
  return lines.join('\n');
}

function optionLabel(o: OptionSpec): string {
  const long = `--${o.name}${o.value !== undefined ? ` ${o.value}` : ''}`;
  return o.short !== undefined ? `-${o.short}, ${long}` : `    ${long}`;
}

function exitCodeLines(): string[] {
  return ['Exit codes:', ...EXIT_CODE_HELP.map(([code, text]) => `  ${String(code).padStart(3)}  ${text}`)];
}

/** The help of one command. */
export function formatCommandHelp(cmd: Command): string {
  const opts = cmd.options.some((o) => o.name === HELP_OPTION.name) ? cmd.options : [...cmd.options, HELP_OPTION];
  const labels = opts.map(optionLabel);
  const col = Math.min(30, Math.max(...labels.map((l) => l.length)) + 2);
  const out: string[] = [];
  cmd.usage.forEach((u, i) => out.push(`${i === 0 ? 'Usage:' : '      '} darefs ${u}`));
  out.push('', wrap(cmd.summary[0].toUpperCase() + cmd.summary.slice(1) + '.', 78));
  if (cmd.description !== undefined) out.push('', wrap(cmd.description, 78));
  out.push('', 'Options:');
  opts.forEach((o, i) => {
    const label = labels[i];
    const pad = ' '.repeat(col + 2);
    const help = wrap(o.help, Math.max(30, 79 - col - 2)).split('\n').join(`\n${pad}`);
    out.push(label.length + 2 > col ? `  ${label}\n${pad}${help}` : `  ${label.padEnd(col)}${help}`);
  });
  if (cmd.examples !== undefined && cmd.examples.length > 0) {
    out.push('', 'Examples:', ...cmd.examples.map((e) => `  ${e}`));
  }
  if (cmd.showExitCodes) out.push('', ...exitCodeLines());
  return `${out.join('\n')}\n`;
}

/** `darefs --help`. */
export function formatGlobalHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  const out = [
    'Usage: darefs COMMAND [options] [arguments]',
    '       darefs COMMAND --help',
    '',
    'darefs shows a plaintext view of a directory of DARE (minio/sio) encrypted files,',
    "and encrypts and decrypts single files compatibly with sio's ncrypt.",
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Options:',
    '  -h, --help      show this help, or a command\'s with COMMAND --help',
    '  -V, --version   print the version',
    '',
    'Environment:',
    '  DAREFS_PASSWORD  password, when no --passfile or --extpass is given (else a prompt)',
    '  DAREFS_DEBUG=1   print stack traces of errors',
    '',
    ...exitCodeLines(),
  ];
  return `${out.join('\n')}\n`;
}

/** Finds a command by name, or throws a UsageError suggesting the closest one. */
export function findCommand(commands: readonly Command[], name: string): Command {
  const cmd = commands.find((c) => c.name === name);
  if (cmd !== undefined) return cmd;
  const suggestion = closest(name, commands.map((c) => c.name));
  throw new UsageError(`unknown command '${name}'${didYouMean(suggestion === undefined ? undefined : `'${suggestion}'`)}; run 'darefs --help' for the list`);
}

/** `darefs help [COMMAND]`; `commands` is called lazily so the registry can include this command. */
export function makeHelpCommand(commands: () => readonly Command[]): Command {
  return {
    name: 'help',
    summary: 'show the help of darefs or of one command',
    usage: ['help [COMMAND]'],
    options: [],
    async run(args) {
      const names = args.filter((a) => a !== '--help' && a !== '-h');
      if (names.length > 1) throw new UsageError(`unexpected argument '${names[1]}'`, 'help');
      const text = names.length === 0 ? formatGlobalHelp(commands()) : formatCommandHelp(findCommand(commands(), names[0]));
      process.stdout.write(text);
      return ExitCode.OK;
    },
  };
}
