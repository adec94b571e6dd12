import * as fs from 'node:fs';
import * as path from 'node:path';
import { OpenedVolume } from '../store';
import { Logger } from './logger';
import { MountpointError, checkMountpoint } from './mountpoint';
import { kernelTransportMissing } from './kernel/channel';
import { KernelMount } from './kernel/mount';
import { FUSE_WRITEBACK_CACHE, hasFlag } from './kernel/protocol';
import { FuseMount, fusePatchGaps, UnmountReason } from './native';
import { FuseOperations } from './native-types';
import { createOperations } from './ops';
import { PathMap } from './paths';
import { hitRate, MountStatus, serveStatus } from './status';

export interface DaemonOptions {
  cipherDir: string;
  mountpoint: string;
  opened: OpenedVolume;
  log: Logger;
  allowOther?: boolean;
  debug?: boolean;
  readOnly?: boolean;
  /** Unmount after this many ms without any file operation and with no file open. */
  idleUnmountMs?: number;
  /** 'kernel': darefs's own transport (./kernel); 'fuse-native': libfuse 2 through fuse-native. */
  transport?: Transport;
  /** Own transport only: let the kernel cache writes (FUSE_WRITEBACK_CACHE). */
  writebackCache?: boolean;
}

export type Transport = 'kernel' | 'fuse-native';

/** What the daemon needs of a mount, whichever transport serves it. */
interface ServedMount {
  readonly mountpoint: string;
  readonly closed: Promise<UnmountReason>;
  unmount(opts?: { lazy?: boolean; timeoutMs?: number }): Promise<void>;
}

/**
 * A mounted volume: the FUSE mount, its operations and the volume behind them, with a clean
 * stop that seals every pending change before the mount goes away.
 */
export class Daemon {
  /** Resolves when the mount is gone, by stop() or from outside (umount). */
  readonly closed: Promise<UnmountReason>;

  private readonly startedAt = new Date();
  private statusServer: { close(): void } | undefined;
  private idleTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly mount: ServedMount,
    readonly transport: Transport,
    private readonly opts: DaemonOptions,
    private readonly activity: { last: number },
  ) {
    this.closed = mount.closed.then(async (reason) => {
      await this.release();
      return reason;
    });
  }

  get mountpoint(): string {
    return this.mount.mountpoint;
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    const cipherDir = fs.realpathSync(opts.cipherDir);
    const mountpoint = await checkMountpoint(opts.mountpoint);
    if (isWithin(mountpoint, cipherDir) || isWithin(cipherDir, mountpoint)) {
      // Our synchronous calls into the cipher directory would then wait on ourselves.
      throw new MountpointError('FAILED', mountpoint, `the mount point ${mountpoint} and the cipher directory ${cipherDir} must not contain each other`);
    }
    const activity = { last: Date.now() };
    const plain = createOperations({ volume: opts.opened.volume, paths: new PathMap(cipherDir, opts.opened.volume.names), log: opts.log });
    // Only --idle-unmount needs to know when the mount was last used: no wrapper otherwise.
    const ops = opts.idleUnmountMs ? trackActivity(plain, activity) : plain;
    let transport: Transport = opts.transport ?? 'kernel';
    if (transport === 'kernel' && opts.transport === undefined) {
      const missing = kernelTransportMissing();
      if (missing) {
        opts.log.info(`own FUSE transport unavailable (${missing}): serving through fuse-native`);
        transport = 'fuse-native';
      }
    }
    const onProblem = (message: string): void => opts.log.problem(message);
    if (transport === 'fuse-native') {
      const gaps = fusePatchGaps();
      if (gaps.length) onProblem(`fuse-native is not patched (run: node scripts/patch-fuse-native.js in the darefs directory): ${gaps.join('; ')}`);
    }
    let mount: ServedMount;
    if (transport === 'kernel') {
      const k = await KernelMount.mount(mountpoint, ops, {
        fsname: cipherDir,
        subtype: 'darefs',
        allowOther: opts.allowOther,
        defaultPermissions: opts.allowOther,
        readOnly: opts.readOnly,
        writebackCache: opts.writebackCache,
        onProblem,
      });
      const wb = hasFlag(k.granted.flags, FUSE_WRITEBACK_CACHE) ? 'on' : 'off';
      opts.log.info(`own FUSE transport: protocol 7.${k.granted.minor}, requests up to ${k.granted.maxWrite / 1024} KiB, writeback cache ${wb} (mounted with ${k.how})`);
      mount = k;
    } else {
      mount = await FuseMount.mount(mountpoint, ops, {
        fsname: cipherDir,
        subtype: 'darefs',
        allowOther: opts.allowOther,
        defaultPermissions: opts.allowOther,
        debug: opts.debug,
        readOnly: opts.readOnly,
        // st_ino from the cipher inode: hard links show one inode number (tar, find -samefile).
        useIno: true,
        onOpError: (op, err) => onProblem(`FUSE ${op}: ${err instanceof Error ? err.message : String(err)}`),
      });
    }
    const daemon = new Daemon(mount, transport, { ...opts, cipherDir, mountpoint: mount.mountpoint }, activity);
    try {
      daemon.statusServer = await serveStatus(mount.mountpoint, () => daemon.status());
    } catch (err) {
      opts.log.problem(`no status socket (darefs status will not see this mount): ${err instanceof Error ? err.message : String(err)}`);
    }
    if (opts.idleUnmountMs) daemon.watchIdle(opts.idleUnmountMs);
    return daemon;
  }

  status(): MountStatus {
    const { volume, keys, mode } = this.opts.opened;
    const k = keys.stats;
    const p = volume.cache.stats;
    const c = volume.counters;
    return {
      mountpoint: this.mount.mountpoint,
      cipherDir: this.opts.cipherDir,
      pid: process.pid,
      mode,
      readOnly: !!this.opts.readOnly,
      startedAt: this.startedAt.toISOString(),
      openFiles: volume.openFiles,
      keyCache: { hits: k.hits, misses: k.misses, derivations: k.derivations, size: k.size, hitRate: hitRate(k.hits, k.misses) },
      packageCache: { hits: p.hits, misses: p.misses, bytes: p.bytes, maxBytes: p.maxBytes, hitRate: hitRate(p.hits, p.misses) },
      packagesDecrypted: c.packagesOpened,
      packagesSealed: c.packagesSealed,
      streamsRewritten: c.rewrites,
      authFailures: c.authFailures,
      journal: volume.journaled ? 'redo journal in .darefs/journal (in-place rewrites are crash-safe)' : 'off (--no-journal or read-only: a crash during a write can tear a package)',
    };
  }

  private watchIdle(idleMs: number): void {
    this.idleTimer = setInterval(() => {
      if (this.opts.opened.volume.openFiles > 0 || Date.now() - this.activity.last < idleMs) return;
      clearInterval(this.idleTimer);
      this.opts.log.info(`idle for ${Math.round(idleMs / 1000)} s: unmounting ${this.mount.mountpoint}`);
      this.stop(false).catch((err: unknown) => {
        this.opts.log.problem(`idle unmount failed: ${err instanceof Error ? err.message : String(err)}`);
        this.activity.last = Date.now();
        this.watchIdle(idleMs);
      });
    }, Math.min(idleMs, 5000));
    this.idleTimer.unref();
  }

  /** Seals pending changes and unmounts; `lazy` detaches even when the mount is busy. */
  async stop(lazy = false): Promise<void> {
    await this.opts.opened.volume.flushAll().catch((err: unknown) => this.opts.log.problem(`flush before unmount: ${String(err)}`));
    await this.mount.unmount({ lazy });
    await this.closed;
  }

  private released = false;

  private async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.statusServer?.close();
    await this.opts.opened.volume.flushAll().catch((err: unknown) => this.opts.log.problem(`flush after unmount: ${String(err)}`));
    this.opts.opened.dispose();
  }
}

function isWithin(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Wraps every operation so the daemon knows when the mount was last used. */
function trackActivity(ops: FuseOperations, activity: { last: number }): FuseOperations {
  const tracked: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(ops)) {
    if (typeof fn !== 'function') continue;
    tracked[name] = (...args: unknown[]) => {
      activity.last = Date.now();
      return (fn as (...a: unknown[]) => unknown)(...args);
    };
  }
  return tracked as FuseOperations;
}
