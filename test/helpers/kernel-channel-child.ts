/**
 * Child process for test/kernel-channel.test.ts: mounts a null file system through the channel
 * (as whatever user runs it), answers it, and unmounts it when told to on stdin. Speaks JSON
 * lines on stdout: {event:'mounted',how}, {event:'ended',errno}, {event:'error',code,message}.
 *
 *   node kernel-channel-child.js MOUNTPOINT FSNAME [idle-ref | idle-unref]
 *
 * idle-ref / idle-unref: no stdin; after INIT, says {event:'init'} and waits for nothing, with the
 * channel ref'd (the default) or unref'd: the process should stay, or exit by itself.
 */
import * as readline from 'node:readline';
import { Channel, closeMount, openMount } from '../../src/fuse/kernel/channel';
import { serveNull } from './fuse-null';

function say(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

async function main(): Promise<void> {
  const [mountpoint, fsname, mode] = process.argv.slice(2);
  if (!mountpoint || fsname === undefined) throw new Error('usage: kernel-channel-child MOUNTPOINT FSNAME');
  const { fd, how } = await openMount({ mountpoint, fsname, subtype: 'darefs', allowOther: false, defaultPermissions: true, readOnly: false });
  const channel = new Channel(fd);
  const server = serveNull(channel);
  say({ event: 'mounted', how });
  if (mode === 'idle-ref' || mode === 'idle-unref') {
    await server.initDone;
    if (mode === 'idle-unref') channel.unref();
    say({ event: 'init' });
    return;
  }
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line !== 'unmount') continue;
    await closeMount(mountpoint, { lazy: false });
    say({ event: 'ended', errno: await server.ended, writeErrors: server.writeErrors });
    channel.close();
    lines.close();
  }
}

main().catch((err: unknown) => {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
  say({ event: 'error', code, message: err instanceof Error ? err.message : String(err) });
  process.exitCode = 1;
});
