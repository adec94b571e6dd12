// A small typed option parser (no dependency) and the shape of a CLI command.
//
// Long options `--name`, `--name value`, `--name=value`; one-letter short
// aliases `-x` / `-x value`; positionals; `--` ends the options; `-` is a
// positional (standard input/output). Unknown options are usage errors that
// suggest the closest known option.

import { UsageError } from './errors';

export interface OptionSpec {
  /** Long name without the dashes: 'passfile' for --passfile. */
  readonly name: string;
  /** Optional one-letter alias: 'f' for -f. */
  readonly short?: string;
  /** Metavariable shown in help ('FILE'); when present the option takes a value. */
  readonly value?: string;
  /** Allowed values, checked by the parser. */
  readonly choices?: readonly string[];
  /** One line of help. */
  readonly help: string;
}

/** Keeps the literal option names, so parsed options are typed by name. */
export function defineOptions<const S extends readonly OptionSpec[]>(specs: S): S {
  return specs;
}

type ValueOf<S extends OptionSpec> = S extends { readonly value: string } ? string | undefined : boolean;

export type ParsedOptions<S extends readonly OptionSpec[]> = { [K in S[number] as K['name']]: ValueOf<K> };

export interface Parsed<S extends readonly OptionSpec[]> {
  readonly options: ParsedOptions<S>;
  readonly positionals: string[];
}

/** `-h, --help`: accepted by every command (main.ts answers it before the command runs). */
export const HELP_OPTION = { name: 'help', short: 'h', help: 'show this help and exit' } as const satisfies OptionSpec;

/**
 * A command of the `darefs` CLI. Add one by exporting such an object from
 * `src/cli/commands/NAME.ts` and listing it in COMMANDS in main.ts.
 */
export interface Command {
  readonly name: string;
  /** One line for `darefs --help`. */
  readonly summary: string;
  /** Synopsis lines without the leading "darefs ": 'decrypt [options] [IN [OUT]]'. */
  readonly usage: readonly string[];
  /** A few sentences under the synopsis in `darefs COMMAND --help`. */
  readonly description?: string;
  /** The options the command accepts; -h/--help is implied. */
  readonly options: readonly OptionSpec[];
  /** Full command lines shown under "Examples:". */
  readonly examples?: readonly string[];
  /** Show the exit code table in this command's help. */
  readonly showExitCodes?: boolean;
  /** Runs with the arguments after the command name; resolves to the exit code. Throws for errors. */
  run(args: string[]): Promise<number>;
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function editDistance(a: string, b: string): number {
  const m = a.length;
  const n = b.length;
  let prev2 = new Array<number>(n + 1).fill(0);
  let prev = Array.from({ length: n + 1 }, (_, j) => j);
  let cur = new Array<number>(n + 1).fill(0);
  for (let i = 1; i <= m; i++) {
    cur[0] = i;
    for (let j = 1; j <= n; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, prev2[j - 2] + 1);
      cur[j] = d;
    }
    [prev2, prev, cur] = [prev, cur, prev2];
  }
  return prev[n];
}

/** The closest candidate to `word`, if it is close enough to be a likely typo (or `word` is its prefix). */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  if (best === undefined) return undefined;
  const limit = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  if (bestDistance <= limit) return best;
  if (word.length >= 2) {
    const prefixed = candidates.filter((c) => c.startsWith(word.toLowerCase()));
    if (prefixed.length === 1) return prefixed[0];
  }
  return undefined;
}

/** " (did you mean --passfile?)" or "". */
export function didYouMean(suggestion: string | undefined): string {
  return suggestion === undefined ? '' : ` (did you mean ${suggestion}?)`;
}

/** Parses `argv` against `specs`; throws UsageError naming the problem (and the command, for its --help). */
export function parseArgs<const S extends readonly OptionSpec[]>(argv: readonly string[], specs: S, command?: string): Parsed<S> {
  const all: readonly OptionSpec[] = specs.some((s) => s.name === HELP_OPTION.name) ? specs : [...specs, HELP_OPTION];
  const byLong = new Map(all.map((s) => [s.name, s]));
  const byShort = new Map(all.filter((s) => s.short !== undefined).map((s) => [s.short as string, s]));
  const values: Record<string, string | boolean> = {};
  for (const s of all) values[s.name] = s.value === undefined ? false : (undefined as unknown as string);
  const seen = new Set<string>();
  const positionals: string[] = [];
  const usage = (message: string): UsageError => new UsageError(message, command);

  const unknown = (token: string): UsageError => {
    const name = token.replace(/^-+/, '').split('=')[0];
    const longs = all.map((s) => s.name);
    const suggestion = name.length > 1 ? closest(name, longs) : undefined;
    return usage(`unknown option ${token.split('=')[0]}${didYouMean(suggestion === undefined ? undefined : `--${suggestion}`)}`);
  };

  const set = (spec: OptionSpec, shown: string, value: string | undefined): void => {
    if (seen.has(spec.name)) throw usage(`option --${spec.name} given more than once`);
    seen.add(spec.name);
    if (spec.value === undefined) {
      if (value !== undefined) throw usage(`option ${shown} takes no value`);
      values[spec.name] = true;
      return;
    }
    if (value === undefined) throw usage(`option ${shown} needs a value (${spec.value})`);
    if (spec.choices !== undefined && !spec.choices.includes(value)) {
      const hint = closest(value, spec.choices);
      throw usage(
        `invalid value '${value}' for ${shown}: expected ${spec.choices.join(' or ')}` +
          (hint === undefined ? '' : ` (did you mean ${hint}?)`),
      );
    }
    values[spec.name] = value;
  };

  for (let i = 0; i < argv.length; i++) {
    const token = argv[i];
    if (token === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (token.startsWith('--')) {
      const eq = token.indexOf('=');
      const name = eq === -1 ? token.slice(2) : token.slice(2, eq);
      const spec = byLong.get(name);
      if (spec === undefined) throw unknown(token);
      let value: string | undefined = eq === -1 ? undefined : token.slice(eq + 1);
      if (value === undefined && spec.value !== undefined) {
        if (i + 1 >= argv.length) throw usage(`option --${name} needs a value (${spec.value})`);
        value = argv[++i];
      }
      set(spec, `--${name}`, value);
      continue;
    }
    if (token.startsWith('-') && token !== '-') {
      const spec = token.length === 2 ? byShort.get(token[1]) : undefined;
      if (spec === undefined) throw unknown(token);
      let value: string | undefined;
      if (spec.value !== undefined) {
        if (i + 1 >= argv.length) throw usage(`option ${token} needs a value (${spec.value})`);
        value = argv[++i];
      }
      set(spec, token, value);
      continue;
    }
    positionals.push(token);
  }
  return { options: values as ParsedOptions<S>, positionals };
}

/** Whether argv asks for help (-h or --help before any `--`). */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/** Checks the number of positionals; throws a UsageError naming the extra or missing one. */
export function expectPositionals(positionals: readonly string[], min: number, max: number, names: string, command?: string): void {
  if (positionals.length < min) throw new UsageError(`missing argument: ${names}`, command);
  if (positionals.length > max) {
    const extra = positionals[max];
    const hint = extra.startsWith('-') && extra !== '-' ? ' (put options before a -- marker)' : '';
    throw new UsageError(`unexpected argument '${extra}'${hint}`, command);
  }
}
