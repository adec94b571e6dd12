// `darefs status [MOUNTPOINT] [--json]`: the darefs mounts of this machine and what their daemons
// report over their owner-only status sockets.

import * as path from 'node:path';
import { readMountInfo } from '../../fuse/mountpoint';
import { MountStatus, queryStatus } from '../../fuse/status';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { CliError } from '../errors';
import { ExitCode } from '../exit-codes';

const OPTIONS = defineOptions([{ name: 'json', help: 'print JSON (an array, one object per mount)' }] as const);

interface Row {
  mountpoint: string;
  source: string;
  status: MountStatus | null;
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'show mounted darefs volumes and their cache and crypto counters',
  usage: ['status [--json] [MOUNTPOINT]'],
  description:
    'Lists the fuse.darefs mounts with their cipher directories, open files, key and package cache hit rates, ' +
    'packages decrypted and sealed, and authentication failures. A daemon answers only its own user.',
  options: OPTIONS,
  examples: ['darefs status', 'darefs status ~/plain', 'darefs status --json'],
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'status');
    expectPositionals(positionals, 0, 1, 'MOUNTPOINT', 'status');
    let mounts = (await readMountInfo()).filter((e) => e.fsType === 'fuse.darefs');
    if (positionals[0] !== undefined) {
      const want = path.resolve(positionals[0]);
      mounts = mounts.filter((e) => e.mountPoint === want);
      if (mounts.length === 0) throw new CliError(`${want} is not a darefs mount point`, ExitCode.ERROR);
    }
    const rows: Row[] = [];
    for (const e of mounts) rows.push({ mountpoint: e.mountPoint, source: e.source, status: (await queryStatus(e.mountPoint)) ?? null });
    if (o.json) {
      process.stdout.write(JSON.stringify(rows.map((r) => r.status ?? { mountpoint: r.mountpoint, cipherDir: r.source, error: 'no answer from the daemon' }), null, 2) + '\n');
      return ExitCode.OK;
    }
    if (rows.length === 0) {
      process.stdout.write('no darefs volumes are mounted\n');
      return ExitCode.OK;
    }
    for (const r of rows) process.stdout.write(describe(r) + '\n');
    return ExitCode.OK;
  },
};

function pct(rate: number | null): string {
  return rate === null ? '-' : `${(rate * 100).toFixed(1)}%`;
}

function describe(r: Row): string {
  const s = r.status;
  if (!s) return `${r.mountpoint}\n  cipher dir  ${r.source}\n  daemon      no answer (another user's mount, or the daemon is stuck or gone)\n`;
  const mib = (n: number): string => (n / 1048576).toFixed(1);
  return [
    `${s.mountpoint}`,
    `  cipher dir         ${s.cipherDir} (${s.mode} mode${s.readOnly ? ', read-only' : ''})`,
    `  daemon             pid ${s.pid}, up since ${s.startedAt}`,
    `  open files         ${s.openFiles}`,
    `  key cache          ${s.keyCache.size} keys, hit rate ${pct(s.keyCache.hitRate)}, ${s.keyCache.derivations} derived`,
    `  package cache      ${mib(s.packageCache.bytes)} of ${mib(s.packageCache.maxBytes)} MiB, hit rate ${pct(s.packageCache.hitRate)}`,
    `  packages           ${s.packagesDecrypted} decrypted, ${s.packagesSealed} sealed, ${s.streamsRewritten} streams rewritten`,
    `  auth failures      ${s.authFailures}`,
    `  journal            ${s.journal}`,
    '',
  ].join('\n');
}
