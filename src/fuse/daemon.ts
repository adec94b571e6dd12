import * as fs from 'node:fs';
import * as path from 'node:path';
import { OpenedVolume } from '../store';
import { Logger } from './logger';
import { MountpointError, checkMountpoint } from './mountpoint';
import { FuseMount, UnmountReason } from './native';
import { createOperations } from './ops';
import { PathMap } from './paths';

export interface DaemonOptions {
  cipherDir: string;
  mountpoint: string;
  opened: OpenedVolume;
  log: Logger;
  allowOther?: boolean;
  debug?: boolean;
  readOnly?: boolean;
}

/**
 * A mounted volume: the FUSE mount, its operations and the volume behind them, with a clean
 * stop that seals every pending change before the mount goes away.
 */
export class Daemon {
  /** Resolves when the mount is gone, by stop() or from outside (umount). */
  readonly closed: Promise<UnmountReason>;

  private constructor(
    private readonly mount: FuseMount,
    private readonly opts: DaemonOptions,
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
    const ops = createOperations({ volume: opts.opened.volume, paths: new PathMap(cipherDir), log: opts.log });
    const mount = await FuseMount.mount(mountpoint, ops, {
      fsname: cipherDir,
      subtype: 'darefs',
      allowOther: opts.allowOther,
      defaultPermissions: opts.allowOther,
      debug: opts.debug,
      readOnly: opts.readOnly,
      onOpError: (op, err) => opts.log.problem(`FUSE ${op}: ${err instanceof Error ? err.message : String(err)}`),
    });
    return new Daemon(mount, { ...opts, cipherDir, mountpoint });
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
    await this.opts.opened.volume.flushAll().catch((err: unknown) => this.opts.log.problem(`flush after unmount: ${String(err)}`));
    this.opts.opened.dispose();
  }
}

function isWithin(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}
