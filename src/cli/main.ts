#!/usr/bin/env node
// The darefs command line: dispatches to the commands in COMMANDS, answers
// --help / --version, and turns every error into `darefs: COMMAND: message` on
// stderr and an exit code (errors.ts exitCodeFor; table in exit-codes.ts).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { wantsHelp, type Command } from './args';
import { decryptCommand } from './commands/decrypt';
import { encryptCommand } from './commands/encrypt';
import { exportCommand } from './commands/export';
import { fsckCommand } from './commands/fsck';
import { findCommand, formatCommandHelp, formatGlobalHelp, makeHelpCommand } from './commands/help';
import { importCommand } from './commands/import';
import { initCommand } from './commands/init';
import { lsCommand } from './commands/ls';
import { mountCommand } from './commands/mount';
import { passwdCommand } from './commands/passwd';
import { statusCommand } from './commands/status';
import { umountCommand } from './commands/umount';
import { exitCodeFor, messageFor, UsageError } from './errors';
import { ExitCode } from './exit-codes';
import { takeSecretEnv } from './secrets';

/**
 * The command registry, in the order `darefs --help` lists them. To add a
 * command: export a `Command` (see args.ts) from ./commands/NAME.ts, import it
 * above, and add it here, e.g. `mountCommand,`.
 */
export const COMMANDS: readonly Command[] = [
  initCommand,
  mountCommand,
  umountCommand,
  statusCommand,
  passwdCommand,
  encryptCommand,
  decryptCommand,
  importCommand,
  exportCommand,
  fsckCommand,
  lsCommand,
  makeHelpCommand(() => COMMANDS),
];

export function version(): string {
  // dist/src/cli/main.js -> package.json at the package root.
  for (const dir of [path.join(__dirname, '..', '..', '..'), path.join(__dirname, '..', '..')]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'darefs' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return 'unknown';
}

/** Prints the error as `darefs: [COMMAND: ]message` (stack only with DAREFS_DEBUG=1); returns the exit code. */
export function report(err: unknown, command: string | undefined): number {
  const debug = process.env.DAREFS_DEBUG === '1';
  const prefix = command === undefined ? 'darefs: ' : `darefs: ${command}: `;
  process.stderr.write(`${prefix}${messageFor(err)}\n`);
  if (debug && err instanceof Error && err.stack !== undefined) {
    process.stderr.write(`${err.stack}\n`);
    if (err.cause instanceof Error && err.cause.stack !== undefined) process.stderr.write(`caused by: ${err.cause.stack}\n`);
  }
  return exitCodeFor(err);
}

/** Runs the CLI with argv (without node and the script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  // Before any command runs or starts a child: the passwords leave process.env at once.
  takeSecretEnv();
  const first = argv[0];
  if (first === undefined) {
    process.stderr.write(formatGlobalHelp(COMMANDS));
    return ExitCode.USAGE;
  }
  if (first === '--help' || first === '-h') {
    process.stdout.write(formatGlobalHelp(COMMANDS));
    return ExitCode.OK;
  }
  if (first === '--version' || first === '-V') {
    process.stdout.write(`darefs ${version()}\n`);
    return ExitCode.OK;
  }
  let command: Command;
  try {
    if (first.startsWith('-')) {
      throw new UsageError(`unknown option ${first} (options go after the command; run 'darefs --help')`);
    }
    command = findCommand(COMMANDS, first);
  } catch (err) {
    return report(err, undefined);
  }
  const args = argv.slice(1);
  if (wantsHelp(args) && command.name !== 'help') {
    process.stdout.write(formatCommandHelp(command));
    return ExitCode.OK;
  }
  try {
    return await command.run(args);
  } catch (err) {
    return report(err, command.name);
  }
}

if (require.main === module) {
  // A closed stdout (`darefs decrypt f | head`) must not crash the process: commands see the error.
  process.stdout.on('error', () => undefined);
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.exitCode = report(err, undefined);
    },
  );
}
