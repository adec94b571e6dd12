// `darefs fsck CIPHERDIR`: verifies every package of every file of a cipher directory, reports
// what a crash or a modification left behind, and with --repair does only what is safe: replay
// the journal, remove leftover temporary files. It never guesses plaintext or cuts data.

import * as path from 'node:path';
import { checkTree, type FsckFile, type FsckName, type FsckResult, type SkippedRecord } from '../../store';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { mountedAt, parseJobs, unlockTree } from '../cipher-tree';
import { CliError, UsageError } from '../errors';
import { ExitCode } from '../exit-codes';
import { formatBytes, Progress } from '../progress';
import { visibleName } from '../name-display';
import { KEYFILE_OPTION, PASSWORD_OPTIONS } from '../secrets';
import { realPathOf } from '../tree-copy';

const OPTIONS = defineOptions([
  ...PASSWORD_OPTIONS,
  KEYFILE_OPTION,
  { name: 'ncrypt', help: 'CIPHERDIR is a plain directory of sio ncrypt files (no config): use the password' },
  { name: 'kdf', value: 'KDF', choices: ['hmac-sha256', 'hkdf-sha256'], help: 'with --keyfile and no volume config: hmac-sha256 (default) or hkdf-sha256' },
  {
    name: 'repair',
    help: 'replay the journal, remove leftover temporary files and orphan .name files, and make files shorter than a prefix (no content) empty; nothing else is ever changed',
  },
  { name: 'json', help: 'print the report as JSON on stdout (an object with a files array and counts)' },
  { name: 'jobs', short: 'j', value: 'N', help: 'files checked at once (default 4)' },
  { name: 'force', help: 'check a volume that is mounted (without --repair only; results may be off while it is written)' },
] as const);

interface JournalReport {
  /** Packages of a committed batch left by a crash (not replayed). */
  pendingPackages: number;
  pendingFiles: string[];
  /** A torn batch (the crash hit its commit): nothing was written in place, it can go. */
  torn: boolean;
  replayedPackages: number;
  replayedFiles: string[];
  discarded: boolean;
  /** Why a batch was (or, without --repair, will be) dropped unapplied. */
  reason?: string;
  /** Records that failed a check (FORMAT.md §6) and were not applied. */
  skipped: SkippedRecord[];
}

export const fsckCommand: Command = {
  name: 'fsck',
  summary: 'verify every package of every file of a cipher directory; --repair replays the journal',
  usage: ['fsck [options] CIPHERDIR'],
  description:
    'Unlocks CIPHERDIR as mount does, then checks every file (several at once): its length, package 0 and the last ' +
    'package against the size, and every package by the random-access rules (each must authenticate); and every ' +
    'symlink: its target must be sealed and authenticate. Reports, by path: invalid lengths, files shorter than the ' +
    'prefix, irregular 1.0 streams (short middle packages), packages failing authentication or header checks (by ' +
    'index), symlinks that are not sealed or do not authenticate (never followed), foreign files (not DARE), leftover ' +
    'temporary files, and a journal batch left by a crash; 0-byte files (an empty file whose prefix a crash lost) are noted. ' +
    'On a volume with encrypted names, files are named by plaintext path (and cipher path), and every name is opened: ' +
    'entries whose names do not authenticate, and long names whose .name file is missing, holds another name or does ' +
    'not authenticate, are reported (the mount lists none of them), by cipher path and the plaintext path of their ' +
    'directory; a .name file with no entry beside it (left by a crash) is noted. ' +
    '--repair replays that batch (which repairs the packages the crash tore), removes temporary files and orphan .name files, and makes files ' +
    'shorter than a prefix (which hold no content) empty; it never guesses plaintext and never truncates data. Refuses a mounted volume unless ' +
    '--force. Exit status: 0 when all is well; 6 when a file is damaged (bad packages, invalid length, irregular, a bad symlink) or a name does not authenticate; ' +
    '1 for anything else left to do (a pending journal or temporary files without --repair, foreign files).',
  options: OPTIONS,
  examples: ['darefs fsck ~/cipher', 'darefs fsck --repair --passfile ~/.pw ~/cipher', 'darefs fsck --json --ncrypt ~/ncrypt-files'],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'fsck');
    expectPositionals(positionals, 1, 1, 'CIPHERDIR', 'fsck');
    const cipherDir = positionals[0];
    const jobs = parseJobs(o.jobs, 'fsck');
    const mounted = await mountedAt(cipherDir);
    if (mounted !== undefined) {
      if (!o.force) {
        throw new CliError(`${cipherDir} is mounted on ${mounted}: unmount it first (or pass --force to check it anyway)`, ExitCode.ERROR);
      }
      if (o.repair) throw new UsageError(`${cipherDir} is mounted on ${mounted}: --repair needs it unmounted (the daemon owns its journal)`, 'fsck');
    }
    const unlocked = await unlockTree(cipherDir, o, 'fsck');
    let result: FsckResult;
    const journal: JournalReport = { pendingPackages: 0, pendingFiles: [], torn: false, replayedPackages: 0, replayedFiles: [], discarded: false, skipped: [] };
    try {
      const root = await realPathOf(cipherDir);
      if (o.repair) {
        const r = (await unlocked.opened.volume.recover())!;
        journal.replayedPackages = r.packages;
        journal.replayedFiles = r.files;
        journal.discarded = r.discarded;
        journal.reason = r.reason;
        journal.skipped = r.skipped;
      } else {
        const p = unlocked.opened.volume.inspectJournal()!;
        journal.pendingPackages = p.packages;
        journal.pendingFiles = p.files;
        journal.torn = p.torn;
        journal.reason = p.problem;
      }
      let progress: Progress | undefined;
      try {
        result = await checkTree({
          root,
          key: (prefix) => unlocked.opened.keys.get(prefix),
          jobs,
          removeTemp: o.repair,
          names: unlocked.opened.volume.names,
          onTotal: (_files, bytes) => (progress = new Progress({ label: 'fsck', total: bytes })),
          onBytes: (n) => progress?.add(n),
        });
      } finally {
        progress?.stop();
      }
    } finally {
      unlocked.opened.dispose();
    }
    const journalClean = journal.pendingPackages === 0 && journal.pendingFiles.length === 0 && !journal.torn;
    const tempLeft = result.files.filter((f) => f.status === 'temp' && !f.removed).length;
    const badNames = result.names?.refused ?? 0;
    const damaged = result.files.filter((f) => ['damaged', 'invalid-length', 'short', 'irregular'].includes(f.status)).length + badNames;
    const clean = journalClean && result.counts.bad === 0 && tempLeft === 0 && badNames === 0;
    const code = clean ? ExitCode.OK : damaged > 0 ? ExitCode.CORRUPTED : ExitCode.ERROR;
    if (o.json) {
      const names = result.names === undefined ? {} : { names: result.names };
      process.stdout.write(JSON.stringify({ cipherDir: path.resolve(cipherDir), clean, journal, counts: result.counts, files: result.files, ...names }, null, 2) + '\n');
      return code;
    }
    process.stdout.write(formatReport(result, journal, o.repair));
    if (clean) return ExitCode.OK;
    const what: string[] = [];
    if (result.counts.bad > 0) what.push(`${result.counts.bad} file${result.counts.bad === 1 ? ' has' : 's have'} problems`);
    if (badNames > 0) what.push(`${badNames} name${badNames === 1 ? ' does' : 's do'} not authenticate`);
    if (tempLeft > 0) what.push(`${tempLeft} leftover temporary file${tempLeft === 1 ? '' : 's'}`);
    if (!journalClean) what.push('the journal holds an interrupted write');
    throw new CliError(`${what.join('; ')} (listed above)${!o.repair && (!journalClean || tempLeft > 0) ? ': run with --repair' : ''}`, code);
  },
};

const STATUS_TEXT: Record<FsckFile['status'], string> = {
  ok: 'ok',
  empty: 'EMPTY (information)',
  short: 'TOO SHORT',
  'invalid-length': 'INVALID LENGTH',
  irregular: 'IRREGULAR',
  damaged: 'DAMAGED',
  foreign: 'NOT DARE',
  temp: 'TEMPORARY FILE',
  unreadable: 'UNREADABLE',
};

const NAME_STATUS_TEXT: Record<FsckName['status'], string> = {
  unauthenticated: 'BAD NAME',
  'long-name': 'BAD LONG NAME',
  orphan: 'ORPHAN .name FILE (information)',
};

/**
 * How the report names a file: plain names, by its path as ever; encrypted names, by plaintext
 * path and cipher path, escaped (a name is any bytes).
 */
function fileLabel(result: FsckResult, path: string, plainPath: string | undefined): string {
  if (result.names === undefined) return path;
  if (plainPath === undefined) return `${visibleName(path)} (cipher path; no plaintext path: a name on it does not authenticate)`;
  return `${visibleName(plainPath)} (cipher ${visibleName(path)})`;
}

function nameLine(n: FsckName, repair: boolean): string {
  const dir = n.plainDir === undefined ? 'a directory with no plaintext path' : n.plainDir === '' ? 'the root' : visibleName(n.plainDir);
  const status = n.removed ? 'REMOVED' : NAME_STATUS_TEXT[n.status];
  const todo = n.status === 'orphan' && !repair ? '; --repair removes it' : '';
  return `${visibleName(n.path)} (${n.type} in ${dir}): ${status}: ${n.message}${todo}`;
}

export function formatReport(result: FsckResult, journal: JournalReport, repair = false): string {
  const lines: string[] = [];
  const plainOf = new Map(result.files.map((f) => [f.path, f.plainPath]));
  const journalFiles = (files: string[]): string => files.map((f) => fileLabel(result, f, plainOf.get(f))).join(', ');
  if (journal.discarded) lines.push(`journal: discarded a batch without applying any of it: ${journal.reason ?? 'a torn batch'}`);
  if (journal.replayedFiles.length > 0) lines.push(`journal: replayed ${journal.replayedPackages} packages of ${journal.replayedFiles.length} files (${journalFiles(journal.replayedFiles)})`);
  for (const s of journal.skipped) lines.push(`journal: record for ${JSON.stringify(s.path)} skipped, nothing written: ${s.reason}`);
  if (journal.torn) lines.push(`journal: holds a batch that cannot be applied (${journal.reason ?? 'a torn batch'}): run with --repair to drop it`);
  else if (journal.pendingFiles.length > 0) {
    lines.push(
      `journal: has ${journal.pendingPackages} pending packages of ${journal.pendingFiles.length} files (${journalFiles(journal.pendingFiles)}), ` +
        'left by a crash: run with --repair (replaying it repairs what the crash tore in those files)',
    );
  }
  for (const n of result.names?.entries ?? []) lines.push(nameLine(n, repair));
  for (const f of result.files) {
    if (f.status === 'ok') continue;
    const label = fileLabel(result, f.path, f.plainPath);
    if (f.status === 'temp') {
      lines.push(`${label}: ${STATUS_TEXT.temp}: ${f.removed ? 'removed' : `${f.message}: run with --repair to remove it`}`);
      continue;
    }
    if (f.status === 'empty') {
      lines.push(`${label}: ${f.repaired ? 'REPAIRED' : STATUS_TEXT.empty}: ${f.message ?? ''}`);
      continue;
    }
    const pending = journal.pendingFiles.includes(f.path) ? ' (the pending journal batch covers this file)' : '';
    lines.push(`${label}: ${STATUS_TEXT[f.status]}: ${f.message ?? ''}${pending}`);
    if (f.problems.length > 1) for (const p of f.problems) lines.push(`  package ${p.index}: ${p.message} (${p.error})`);
  }
  const c = result.counts;
  const bytes = result.files.reduce((n, f) => n + (f.status === 'temp' || f.type === 'symlink' ? 0 : f.cipherSize), 0);
  const parts = Object.entries(c.byStatus)
    .filter(([s, n]) => s !== 'temp' && n > 0)
    .map(([s, n]) => `${n} ${s}`);
  const regular = c.files - c.symlinks;
  const links = c.symlinks > 0 ? ` and ${c.symlinks} symlink${c.symlinks === 1 ? '' : 's'}` : '';
  let summary = `checked ${regular} file${regular === 1 ? '' : 's'} (${c.packages} packages, ${formatBytes(bytes)})${links}: ${parts.join(', ') || 'nothing to check'}`;
  if (c.badPackages > 0) summary += `; ${c.badPackages} bad package${c.badPackages === 1 ? '' : 's'}`;
  if (c.temp > 0) summary += `; ${c.temp} leftover temporary file${c.temp === 1 ? '' : 's'}${result.files.some((f) => f.removed) ? ' (removed)' : ''}`;
  if (result.names !== undefined) summary += `; ${nameSummary(result.names)}`;
  lines.push(summary);
  return lines.join('\n') + '\n';
}

/** "12 names authenticate, 1 does not; 1 orphan .name file (removed)" */
function nameSummary(n: NonNullable<FsckResult['names']>): string {
  let text = `${n.checked} name${n.checked === 1 ? '' : 's'} authenticate${n.checked === 1 ? 's' : ''}`;
  if (n.refused > 0) text += `, ${n.refused} do${n.refused === 1 ? 'es' : ''} not`;
  if (n.orphans > 0) {
    const removed = n.entries.filter((e) => e.removed).length;
    text += `; ${n.orphans} orphan .name file${n.orphans === 1 ? '' : 's'}${removed > 0 ? ` (${removed === n.orphans ? '' : `${removed} `}removed)` : ''}`;
  }
  return text;
}
