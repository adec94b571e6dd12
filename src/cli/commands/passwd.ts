// `darefs passwd CIPHERDIR`: changes a volume's passphrase by re-sealing its master key. The
// files are untouched: they depend on the master key, not on the passphrase.

import { changePassphrase } from '../../keys';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { UsageError } from '../errors';
import { ExitCode } from '../exit-codes';
import { getPassword, NEW_PASSWORD_ENV, PASSWORD_OPTIONS, takeSecretEnv } from '../secrets';

const OPTIONS = defineOptions([
  ...PASSWORD_OPTIONS,
  { name: 'new-passfile', value: 'FILE', help: 'read the new passphrase from the first line of FILE' },
  { name: 'new-extpass', value: 'CMD', help: 'run CMD with /bin/sh -c; the first line of its output is the new passphrase' },
] as const);

export const passwdCommand: Command = {
  name: 'passwd',
  summary: "change a volume's passphrase (files are not rewritten)",
  usage: ['passwd [options] CIPHERDIR'],
  description:
    'Asks for the current passphrase (--passfile, --extpass, DAREFS_PASSWORD or a prompt) and the new one ' +
    '(--new-passfile, --new-extpass, DAREFS_NEW_PASSWORD or a prompt, asked twice), then re-seals the master key. ' +
    'The old config is kept as .darefs/config.json.bak until the new one is on disk.',
  options: OPTIONS,
  examples: ['darefs passwd ~/cipher', 'darefs passwd --passfile old.txt --new-passfile new.txt ~/cipher'],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'passwd');
    expectPositionals(positionals, 1, 1, 'CIPHERDIR', 'passwd');
    const dir = positionals[0];
    const oldPass = await getPassword({ passfile: o.passfile, extpass: o.extpass, noun: 'passphrase', prompt: 'Current passphrase: ', command: 'passwd' });
    const secretEnv = takeSecretEnv();
    const newEnv = { DAREFS_PASSWORD: secretEnv[NEW_PASSWORD_ENV] };
    delete secretEnv[NEW_PASSWORD_ENV];
    let newPass: Buffer | undefined;
    try {
      newPass = await getPassword({
        passfile: o['new-passfile'],
        extpass: o['new-extpass'],
        env: newEnv,
        noun: 'new passphrase',
        prompt: 'New passphrase: ',
        confirm: true,
        command: 'passwd',
      });
      if (newPass.equals(oldPass)) throw new UsageError('the new passphrase is the same as the current one', 'passwd');
      await changePassphrase(dir, oldPass, newPass);
    } finally {
      oldPass.fill(0);
      newPass?.fill(0);
    }
    process.stderr.write(`darefs: passphrase of ${dir} changed\n`);
    return ExitCode.OK;
  },
};
