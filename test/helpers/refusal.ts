/**
 * Runs `darefs mount -f` where it is expected to refuse: waits for the daemon to exit and reports
 * its exit code and output. If it mounts instead (the bug the test guards against), the mount is
 * taken down again and `mounted` is true, so a failing test never leaves a mount behind.
 */
import { findMount } from '../../src/fuse/mountpoint';
import { DaemonSpec, ExitInfo, MountDirs, sleep, spawnDaemon, stopDaemon } from './mount';

export interface RefusalResult {
  exit: ExitInfo | undefined;
  mounted: boolean;
  output: string;
}

export async function mountExpectingRefusal(dirs: MountDirs, spec: DaemonSpec, timeoutMs = 30_000): Promise<RefusalResult> {
  const daemon = spawnDaemon(spec);
  const deadline = Date.now() + timeoutMs;
  let mounted = false;
  while (!daemon.exit && Date.now() < deadline) {
    if (await findMount(dirs.mountpoint)) {
      mounted = true;
      break;
    }
    await sleep(50);
  }
  if (!daemon.exit) {
    // Mounted, or hung: either way the refusal did not happen.
    await stopDaemon(daemon, dirs.mountpoint);
    mounted = true;
  }
  return { exit: daemon.exit, mounted, output: daemon.output() };
}
