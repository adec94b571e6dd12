// `darefs ls --volume CIPHERDIR [PLAINPATH]`: which cipher-directory entry holds which plaintext
// name, for a user who needs to find a file in CIPHERDIR without mounting it (a backup, a sync
// conflict, `darefs decrypt` of one file). It only reads: the volume is opened read-only.

import type { CipherDir, Listing, NameScheme } from '../../store';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { unlockTree } from '../cipher-tree';
import { CliError, UsageError } from '../errors';
import { ExitCode } from '../exit-codes';
import { visibleName } from '../name-display';
import { KEYFILE_OPTION, PASSWORD_OPTIONS } from '../secrets';
import { StdoutOutput } from './encrypt';

const OPTIONS = defineOptions([
  { name: 'volume', value: 'CIPHERDIR', help: 'the volume to list (required)' },
  { name: 'recursive', short: 'R', help: 'list every directory below too, each under a "PLAINPATH:" header, as ls -R does' },
  ...PASSWORD_OPTIONS,
  KEYFILE_OPTION,
  { name: 'ncrypt', help: 'CIPHERDIR is a plain directory of sio ncrypt files (no config): use the password' },
  { name: 'kdf', value: 'KDF', choices: ['hmac-sha256', 'hkdf-sha256'], help: 'with --keyfile and no volume config: hmac-sha256 (default) or hkdf-sha256' },
] as const);

/** What the plaintext column shows for an entry whose name does not authenticate (a third column gives the reason). */
export const REFUSED_MARK = '!refused';

export const lsCommand: Command = {
  name: 'ls',
  summary: 'list a directory of a volume: each cipher-directory entry beside its plaintext name',
  usage: ['ls --volume CIPHERDIR [options] [PLAINPATH]'],
  description:
    'Unlocks CIPHERDIR as mount does (read-only: nothing is written) and lists the directory PLAINPATH (a plaintext ' +
    'path inside the volume; default its root), one line per entry: the entry name in CIPHERDIR, a tab, and the ' +
    'plaintext name, with "/" after a directory. Sorted by plaintext name. A plaintext name is printed with ' +
    'backslash escapes for control characters, bytes that are not UTF-8 and backslashes (\\t, \\x1b, \\xff, \\\\). If ' +
    'PLAINPATH is a file, its one entry is printed. An entry whose name does not authenticate (forged, damaged, or a ' +
    `long name whose .name file is missing or wrong) shows ${REFUSED_MARK} in the plaintext column and the reason in a ` +
    'third; the mount does not list it, and the exit status is 6. On a volume with plain names (and in ncrypt mode) ' +
    'both columns are the same.',
  options: OPTIONS,
  examples: ['darefs ls --volume ~/vault', 'darefs ls --volume ~/vault -R docs', 'darefs ls --volume ~/vault docs/report.pdf'],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'ls');
    expectPositionals(positionals, 0, 1, 'PLAINPATH', 'ls');
    if (o.volume === undefined) throw new UsageError('--volume CIPHERDIR is required: the volume to list', 'ls');
    const plainPath = plainRelative(positionals[0] ?? '');
    const unlocked = await unlockTree(o.volume, o, 'ls');
    const lister = new Lister(unlocked.opened.volume.dir, unlocked.opened.volume.names, o.volume);
    try {
      await new StdoutOutput().sink(lister.run(plainPath, o.recursive));
    } finally {
      unlocked.opened.dispose();
    }
    if (lister.refused === 0) return ExitCode.OK;
    throw new CliError(
      `${lister.refused} entr${lister.refused === 1 ? 'y has a name that does' : 'ies have names that do'} not authenticate ` +
        `(marked ${REFUSED_MARK} above; the mount does not list them): darefs fsck reports them all`,
      ExitCode.CORRUPTED,
    );
  },
};

/** PLAINPATH as a path relative to the volume's root: '', 'docs', 'docs/a.txt'. */
function plainRelative(arg: string): string {
  const parts = arg.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new UsageError(`PLAINPATH ${JSON.stringify(arg)} has a ".." component: give a path inside the volume, from its root`, 'ls');
  return parts.join('/');
}

const join = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`);

class Lister {
  /** Entries printed as refused. */
  refused = 0;

  constructor(
    private readonly dir: CipherDir,
    private readonly names: NameScheme,
    private readonly volume: string,
  ) {}

  /** The output, a directory at a time. */
  async *run(plainPath: string, recursive: boolean): AsyncGenerator<Buffer> {
    const target = this.resolve(plainPath);
    if (target.listed === undefined || !target.isDirectory) {
      yield Buffer.from(this.line(target.entry, target.listed, target.isDirectory, target.reason));
      return;
    }
    yield* this.directory(target.cipher, plainPath, recursive, true);
  }

  private async *directory(cipher: string, plain: string, recursive: boolean, first: boolean): AsyncGenerator<Buffer> {
    const types = new Map(this.dir.readdirTypes(cipher).map((d) => [d.name, d]));
    const listing = this.names.list(this.dir, cipher);
    const isDir = (entry: string): boolean => types.get(entry)?.isDirectory() === true;
    const entries = [...listing.entries].sort((a, b) => compare(a.name, b.name));
    const refused = [...listing.refused].sort((a, b) => compare(a.entry, b.entry));
    let text = recursive ? `${first ? '' : '\n'}${plain === '' ? '.' : visibleName(plain)}:\n` : '';
    for (const e of entries) text += this.line(e.entry, e.name, isDir(e.entry));
    for (const e of refused) text += this.line(e.entry, undefined, isDir(e.entry), e.reason);
    yield Buffer.from(text);
    if (!recursive) return;
    // Directories whose names do not authenticate have no plaintext path: fsck walks them.
    for (const e of entries) if (isDir(e.entry)) yield* this.directory(join(cipher, e.entry), join(plain, e.name), true, false);
  }

  /** One entry: cipher name, tab, plaintext name (or the refusal mark, tab, reason). */
  private line(entry: string, name: string | undefined, isDirectory: boolean, reason?: string): string {
    if (name !== undefined) return `${visibleName(entry)}\t${visibleName(name)}${isDirectory ? '/' : ''}\n`;
    this.refused++;
    return `${visibleName(entry)}\t${REFUSED_MARK}\t${visibleName(reason ?? 'no plaintext name')}\n`;
  }

  /**
   * The cipher path of a plaintext path, every component checked against its directory's listing:
   * what the mount does not list (darefs's own entries, a name that does not authenticate) is
   * not found here either.
   */
  private resolve(plainPath: string): { cipher: string; entry: string; listed?: string; isDirectory: boolean; reason?: string } {
    if (plainPath === '') return { cipher: '', entry: '', listed: '', isDirectory: true };
    const plainParts = plainPath.split('/');
    const cipherParts = this.names.toCipher(plainPath).split('/');
    let cipher = '';
    for (let i = 0; ; i++) {
      const here = plainParts.slice(0, i + 1).join('/');
      const listing = this.listOf(cipher, plainParts.slice(0, i).join('/'));
      const entry = cipherParts[i];
      const listed = listing.entries.find((e) => e.entry === entry);
      const refused = listing.refused.find((e) => e.entry === entry);
      if (listed === undefined && refused === undefined) throw new CliError(`${visibleName(here)}: no such file or directory in ${this.volume}`, ExitCode.ERROR);
      cipher = join(cipher, entry);
      const isDirectory = this.dir.lstat(cipher).isDirectory();
      if (i === plainParts.length - 1) return { cipher, entry, listed: listed?.name, isDirectory, reason: refused?.reason };
      if (refused !== undefined) {
        this.refused++;
        throw new CliError(`${visibleName(here)} (${visibleName(cipher)}): its name does not authenticate: ${visibleName(refused.reason)}`, ExitCode.CORRUPTED);
      }
      if (!isDirectory) throw new CliError(`${visibleName(here)}: not a directory`, ExitCode.ERROR);
    }
  }

  private listOf(cipher: string, plain: string): Listing {
    try {
      return this.names.list(this.dir, cipher);
    } catch (err) {
      throw new CliError(`cannot list ${plain === '' ? 'the root' : visibleName(plain)} (${cipher === '' ? this.volume : visibleName(cipher)}): ${(err as Error).message}`, ExitCode.ERROR);
    }
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
