// `darefs umount MOUNTPOINT`: unmounts a darefs mount (the daemon then exits by itself), cleans a
// stale one, and says who holds a busy one.

import * as path from 'node:path';
import { cleanStaleMount, findMount, isStale, MountBusyError, unmountPath } from '../../fuse/mountpoint';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { CliError } from '../errors';
import { ExitCode } from '../exit-codes';

const OPTIONS = defineOptions([
  { name: 'lazy', short: 'l', help: 'detach now even if busy; open files keep working until closed' },
] as const);

export const umountCommand: Command = {
  name: 'umount',
  summary: 'unmount a darefs mount point',
  usage: ['umount [--lazy] MOUNTPOINT'],
  description: 'Pending changes are sealed and written before the mount goes away. A stale mount (its daemon was killed) is cleaned up.',
  options: OPTIONS,
  examples: ['darefs umount ~/plain', 'darefs umount --lazy ~/plain'],
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'umount');
    expectPositionals(positionals, 1, 1, 'MOUNTPOINT', 'umount');
    const mnt = path.resolve(positionals[0]);
    const entry = await findMount(mnt);
    if (!entry) throw new CliError(`${mnt} is not a mount point`, ExitCode.ERROR);
    if (entry.fsType.startsWith('fuse') && (await isStale(mnt))) {
      await cleanStaleMount(mnt);
      process.stderr.write(`darefs: cleaned up the stale mount on ${mnt}\n`);
      return ExitCode.OK;
    }
    try {
      await unmountPath(mnt, { lazy: o.lazy });
    } catch (err) {
      if (err instanceof MountBusyError) {
        throw new CliError(`${err.message}\nClose those files (or leave those directories), or use 'darefs umount --lazy ${mnt}'.`, ExitCode.ERROR);
      }
      throw err;
    }
    return ExitCode.OK;
  },
};
