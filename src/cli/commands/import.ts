// `darefs import PLAINDIR CIPHERDIR`: encrypts a whole plaintext tree into a cipher directory
// (tree-copy.ts does the walking, the temp-file-then-rename writes and the resuming).

import * as fs from 'node:fs';
import { CONFIG_DIR } from '../../keys';
import { expectPositionals, parseArgs, type Command } from '../args';
import { finishTreeCommand, importCodec, mountedAt, parseJobs, refuseNesting, TREE_COMMAND_OPTIONS, unlockTree } from '../cipher-tree';
import { CliError, ioError } from '../errors';
import { ExitCode } from '../exit-codes';
import { copyTree } from '../tree-copy';

export const importCommand: Command = {
  name: 'import',
  summary: 'encrypt a whole directory tree into a cipher directory',
  usage: ['import [options] PLAINDIR CIPHERDIR'],
  description:
    'Encrypts every file under PLAINDIR to the same relative path under CIPHERDIR (a volume made by ' +
    "'darefs init', or with --ncrypt a directory of sio ncrypt files), in the volume's DARE version and " +
    'cipher. In a volume with encrypted names (init --encrypt-names) every name is stored encrypted, as the ' +
    'mount stores it: any name, also one that is not UTF-8; a name whose cipher name is too long for one ' +
    "directory entry gets its '.name' file, synced, before its entry. A volume with plain names (and an " +
    'ncrypt directory) keeps names as they are and cannot hold one that is not UTF-8: such an entry is ' +
    'reported and not imported. Directories and symlinks (targets as they are) are recreated; modes and access/modification ' +
    'times are kept on the cipher files, owners too when run as root. Each file is written to a ' +
    'temporary name beside its target, fsynced and renamed, so an interrupted import never leaves a ' +
    'half-written file under a real name. Resumable: a rerun removes leftover temporary files and skips ' +
    'every file already complete and verified: its cipher file has the size a stream of the source size ' +
    "has, the source's mtime, and decrypts completely with the volume's key (every package " +
    'authenticates; --quick skips this read). Everything else is encrypted again. A file that fails is ' +
    'reported and the import goes on; the exit code is then non-zero. A progress line is shown when ' +
    'stderr is a terminal; a summary at the end. Do not import into a mounted volume: copy into its ' +
    'mount point instead.',
  options: TREE_COMMAND_OPTIONS,
  examples: [
    'darefs import ~/photos ~/cipher',
    'darefs import --passfile ~/.pw -j 8 ~/photos ~/cipher',
    'darefs import --ncrypt ~/docs ~/ncrypt-files',
    'darefs import --keyfile master.key ~/photos ~/cipher',
  ],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, TREE_COMMAND_OPTIONS, 'import');
    expectPositionals(positionals, 2, 2, 'PLAINDIR CIPHERDIR', 'import');
    const [plainDir, cipherDir] = positionals;
    const jobs = parseJobs(o.jobs, 'import');
    let st: fs.Stats;
    try {
      st = await fs.promises.stat(plainDir);
    } catch (err) {
      throw ioError(err, 'cannot read PLAINDIR', plainDir);
    }
    if (!st.isDirectory()) throw new CliError(`PLAINDIR ${plainDir} is not a directory: give the directory to import`, ExitCode.ERROR);
    await refuseNesting(plainDir, cipherDir, 'import');
    const mnt = await mountedAt(cipherDir);
    if (mnt !== undefined) {
      throw new CliError(
        `${cipherDir} is mounted on ${mnt}: copy into the mount point instead (cp -a ${plainDir}/. ${mnt}/), or unmount it first`,
        ExitCode.ERROR,
      );
    }
    const unlocked = await unlockTree(cipherDir, o, 'import');
    try {
      const names = unlocked.opened.volume.names;
      // With encrypted names `.darefs` is a name like any other (its cipher name is not the volume's own).
      const reserved = names.encrypted ? [] : [CONFIG_DIR];
      if (!o.quiet && !names.encrypted && fs.existsSync(`${plainDir}/${CONFIG_DIR}`)) {
        process.stderr.write(`darefs: import: ${plainDir}/${CONFIG_DIR} is not imported: the name is reserved for the volume's own data\n`);
      }
      const summary = await copyTree({
        command: 'import',
        srcRoot: plainDir,
        dstRoot: cipherDir,
        codec: importCodec(unlocked),
        jobs,
        quick: o.quick,
        quiet: o.quiet,
        excludeAtRoot: new Set(reserved),
        createRoot: false,
        dstDir: unlocked.opened.volume.dir,
        names,
      });
      return finishTreeCommand('import', summary, o.quiet);
    } finally {
      unlocked.opened.dispose();
    }
  },
};
