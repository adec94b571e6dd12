// Exit codes of the darefs CLI, in one place. `exitCodeFor` (errors.ts) is the
// only function that turns an error into one of these; `EXIT_CODE_HELP` is
// what `--help` prints, so the table and the code cannot drift apart.

export const ExitCode = Object.freeze({
  /** Success. */
  OK: 0,
  /** Any other failure: a file that cannot be read or written (the message names it), OUT exists, ... */
  ERROR: 1,
  /** The command line is wrong: unknown command or option, bad value, missing argument, no password source. */
  USAGE: 2,
  /** Wrong or unusable password or key (for a DARE file: authentication failed in package 0). */
  WRONG_KEY: 3,
  /** Not a DARE file: shorter than the prefix, unknown version or cipher in package 0. */
  NOT_DARE: 4,
  /** The stream is truncated: the final package or part of a package is missing. */
  TRUNCATED: 5,
  /** A corrupted or modified package (its index is in the message). */
  CORRUPTED: 6,
  /** Volume config problem: not a darefs volume, invalid config, or `init` on an existing volume. */
  VOLUME: 7,
  /** Interrupted by Ctrl-C (SIGINT) or at the password prompt. */
  INTERRUPTED: 130,
  /** Terminated by SIGTERM. */
  TERMINATED: 143,
});

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** The table printed by `--help`. */
export const EXIT_CODE_HELP: ReadonlyArray<readonly [number, string]> = [
  [ExitCode.OK, 'success'],
  [ExitCode.ERROR, 'I/O or other error (the message names the file)'],
  [ExitCode.USAGE, 'usage error (unknown option, bad value, no password source)'],
  [ExitCode.WRONG_KEY, 'wrong password or key'],
  [ExitCode.NOT_DARE, 'not a DARE file'],
  [ExitCode.TRUNCATED, 'truncated DARE stream'],
  [ExitCode.CORRUPTED, 'corrupted or modified package (index in the message)'],
  [ExitCode.VOLUME, 'volume config problem (not a volume, invalid, already initialized)'],
  [ExitCode.INTERRUPTED, 'interrupted (Ctrl-C)'],
];
