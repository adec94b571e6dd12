/**
 * A mount served by darefs's own transport: the device and mount from ./channel, the session
 * from ./server. Same life cycle as the fuse-native FuseMount (../native.ts): `closed` resolves
 * once the kernel is done with the connection (our unmount, an unmount from outside, or the last
 * user of a lazily detached mount gone), and `unmount` never blocks the thread that answers the
 * requests an unmount itself causes (umount(8) asks STATFS first; a writeback flush sends WRITEs):
 * the unmount command runs in a child process while this event loop keeps serving.
 */
import { promises as fsp } from 'node:fs';
import { canonicalMountpoint, MountEntry, MountpointError, readMountInfo, unmountPath } from '../mountpoint';
import { FuseOperations } from '../native-types';
import { Channel, closeMount, openMount } from './channel';
import { DEFAULT_SESSION, KernelSession, SessionSettings } from './server';

export type UnmountReason = 'unmounted' | 'external';

export class KernelMountError extends Error {
  override readonly name = 'KernelMountError';
}

export interface KernelMountOptions {
  fsname: string;
  subtype?: string;
  allowOther?: boolean;
  defaultPermissions?: boolean;
  readOnly?: boolean;
  writebackCache?: boolean;
  attrTimeout?: number;
  entryTimeout?: number;
  negativeTimeout?: number;
  /** Give up if the kernel has not sent INIT and the mount does not answer stat by then (ms). */
  mountTimeoutMs?: number;
  /** A request that could not be decoded, a handler that threw, a reply the kernel refused. */
  onProblem?: (message: string) => void;
}

/** Read buffer: the largest WRITE (1 MiB) plus its headers (the kernel wants >= max_write + 80). */
const MAX_WRITE = 1 << 20;

export class KernelMount {
  readonly closed: Promise<UnmountReason>;
  private resolveClosed!: (reason: UnmountReason) => void;
  private state: 'mounted' | 'unmounting' | 'closed' = 'mounted';
  private unmountAsked = false;

  private constructor(
    readonly mountpoint: string,
    readonly mountId: number,
    readonly fsType: string,
    readonly session: KernelSession,
    readonly how: string,
    /** What INIT settled. */
    readonly granted: { minor: number; flags: number; maxWrite: number },
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  get mounted(): boolean {
    return this.state === 'mounted';
  }

  static async mount(mountpoint: string, ops: FuseOperations, opts: KernelMountOptions): Promise<KernelMount> {
    const mnt = await canonicalMountpoint(mountpoint);
    const subtype = opts.subtype ?? 'darefs';
    const settings: SessionSettings = {
      ...DEFAULT_SESSION,
      maxWrite: MAX_WRITE,
      writebackCache: !!opts.writebackCache,
      readOnly: !!opts.readOnly,
      ...(opts.attrTimeout !== undefined && { attrTimeout: opts.attrTimeout }),
      ...(opts.entryTimeout !== undefined && { entryTimeout: opts.entryTimeout }),
      ...(opts.negativeTimeout !== undefined && { negativeTimeout: opts.negativeTimeout }),
    };
    const opened = await openMount({
      mountpoint: mnt,
      fsname: opts.fsname,
      subtype,
      allowOther: !!opts.allowOther,
      defaultPermissions: !!opts.defaultPermissions,
      readOnly: !!opts.readOnly,
    });
    const channel = new Channel(opened.fd);
    let granted = { minor: 0, flags: 0, maxWrite: 0 };
    let initDone!: () => void;
    const init = new Promise<void>((resolve) => {
      initDone = resolve;
    });
    let ended: ((errno: number) => void) | undefined;
    const endedEarly = new Promise<number>((resolve) => {
      ended = resolve;
    });
    const session = new KernelSession(ops, channel, settings, {
      onInit: (g) => {
        granted = g;
        initDone();
      },
      onProblem: opts.onProblem,
    });
    let mount: KernelMount | undefined;
    channel.start(
      (requests) => {
        for (const r of requests) session.handle(r);
      },
      (errno) => {
        channel.close();
        if (mount) mount.connectionEnded();
        else ended?.(errno);
      },
    );
    const timeoutMs = opts.mountTimeoutMs ?? 30_000;
    const fail = async (message: string): Promise<never> => {
      await closeMount(mnt, { lazy: true }).catch(() => undefined);
      channel.close();
      throw new KernelMountError(message);
    };
    const first = await race([init.then(() => 'init' as const), endedEarly.then(() => 'ended' as const)], timeoutMs);
    if (first !== 'init') await fail(first === 'ended' ? `mounting ${mnt}: the kernel closed the connection before INIT` : `mounting ${mnt}: no INIT from the kernel within ${timeoutMs / 1000} s`);

    let entry: MountEntry | undefined;
    for (const e of await readMountInfo()) if (e.mountPoint === mnt && e.fsType.startsWith('fuse')) entry = e;
    if (!entry) return fail(`mounting ${mnt}: INIT came but the mount is not in /proc/self/mountinfo`);
    mount = new KernelMount(mnt, entry.id, entry.fsType, session, opened.how, granted);
    // Answered by this very event loop, free while we await: a real end-to-end check.
    const answered = await race([fsp.stat(mnt).then(() => 'ok' as const, () => 'error' as const)], timeoutMs);
    if (answered !== 'ok') {
      await mount.unmount({ lazy: true }).catch(() => undefined);
      throw new KernelMountError(`mounting ${mnt}: the mount does not answer stat`);
    }
    return mount;
  }

  /**
   * Unmount (MountpointError BUSY / TIMEOUT / FAILED as unmountPath throws them). `lazy`
   * detaches even when busy; `closed` then resolves when the last user is gone.
   */
  async unmount(opts: { lazy?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (this.state === 'closed') return;
    this.unmountAsked = true;
    try {
      await unmountPath(this.mountpoint, { lazy: opts.lazy, timeoutMs: opts.timeoutMs, mountId: this.mountId });
    } catch (err) {
      // Already gone (from outside, at the same moment): nothing left to unmount.
      if (!(err instanceof MountpointError && err.code === 'NOTMOUNTED')) {
        this.unmountAsked = false;
        throw err;
      }
    }
    if (this.state === 'mounted') this.state = 'unmounting';
    if (!opts.lazy) await this.closed;
  }

  private connectionEnded(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.resolveClosed(this.unmountAsked ? 'unmounted' : 'external');
  }
}

function race<T>(work: Promise<T>[], ms: number): Promise<T | 'timeout'> {
  return new Promise<T | 'timeout'>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms);
    for (const w of work) {
      w.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        () => undefined,
      );
    }
  });
}
