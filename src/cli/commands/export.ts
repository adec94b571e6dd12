// `darefs export CIPHERDIR PLAINDIR`: decrypts a whole cipher directory into a plaintext tree
// (the reverse of import; tree-copy.ts does the walking, temp-file writes and resuming).

import * as fs from 'node:fs';
import { CONFIG_DIR } from '../../keys';
import { expectPositionals, parseArgs, type Command } from '../args';
import { exportCodec, finishTreeCommand, parseJobs, refuseNesting, TREE_COMMAND_OPTIONS, unlockTree } from '../cipher-tree';
import { CliError } from '../errors';
import { ExitCode } from '../exit-codes';
import { copyTree } from '../tree-copy';

export const exportCommand: Command = {
  name: 'export',
  summary: 'decrypt a whole cipher directory into a plaintext tree',
  usage: ['export [options] CIPHERDIR PLAINDIR'],
  description:
    'Decrypts every file under CIPHERDIR (a darefs volume, or with --ncrypt a directory of sio ncrypt ' +
    'files) to the same relative path under PLAINDIR (created with mode 0700 if missing). Directories ' +
    'and symlinks are recreated, modes and times kept, owners too when run as root; .darefs/ and ' +
    'temporary files are never exported. In a volume with encrypted names each name is decrypted (any ' +
    "name, also one that is not UTF-8, comes out byte for byte); an entry whose name does not open (forged, " +
    "damaged, another volume's, a long name without its '.name' file) is reported with its cipher path, not " +
    'exported, and the exit code is non-zero. Only plaintext of packages that authenticate is written, to a ' +
    'temporary name that is renamed once the whole file verified: a file that fails (a modified ' +
    'package, a truncated stream) is reported with its path and package index, leaves nothing behind, ' +
    'and the export goes on with the others and exits non-zero. Resumable: a rerun removes leftover ' +
    'temporary files and skips every file already complete and verified: it has the plaintext size ' +
    "the cipher file's size gives, the cipher file's mtime, and the same bytes as the cipher file " +
    'decrypts to (--quick skips this read). A progress line is shown when stderr is a terminal; a ' +
    'summary at the end.',
  options: TREE_COMMAND_OPTIONS,
  examples: [
    'darefs export ~/cipher ~/restore',
    'darefs export --passfile ~/.pw --quick ~/cipher ~/restore',
    'darefs export --ncrypt ~/ncrypt-files ~/plain',
  ],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, TREE_COMMAND_OPTIONS, 'export');
    expectPositionals(positionals, 2, 2, 'CIPHERDIR PLAINDIR', 'export');
    const [cipherDir, plainDir] = positionals;
    const jobs = parseJobs(o.jobs, 'export');
    await refuseNesting(plainDir, cipherDir, 'export');
    const existing = await fs.promises.stat(plainDir).catch(() => undefined);
    if (existing !== undefined && !existing.isDirectory()) {
      throw new CliError(`PLAINDIR ${plainDir} exists and is not a directory: give a directory to export into`, ExitCode.ERROR);
    }
    const unlocked = await unlockTree(cipherDir, o, 'export');
    try {
      const summary = await copyTree({
        command: 'export',
        srcRoot: cipherDir,
        dstRoot: plainDir,
        codec: exportCodec(unlocked),
        jobs,
        quick: o.quick,
        quiet: o.quiet,
        excludeAtRoot: new Set([CONFIG_DIR]),
        createRoot: true,
        srcDir: unlocked.opened.volume.dir,
        names: unlocked.opened.volume.names,
      });
      return finishTreeCommand('export', summary, o.quiet);
    } finally {
      unlocked.opened.dispose();
    }
  },
};
