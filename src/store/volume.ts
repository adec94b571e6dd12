import * as fs from 'node:fs';
import { CipherDir } from './cipher-dir';
import { Checkpointer, CipherFile, DirtyBudget, FileContext, KeySource, StoreCounters, StoreSettings } from './cipher-file';
import * as io from './io';
import { Journal, JournalAuth, JournalInspection, ReplayResult } from './journal';
import { PackageCache } from './package-cache';
import { NameScheme, PlainNames } from './names';
import { openLink, sealLink } from './symlink';
import { AttrStore, attrStore } from './xattrs';

export interface VolumeOptions {
  keys: KeySource;
  settings: StoreSettings;
  readOnly: boolean;
  /** Bound of the decrypted-package cache, in bytes. */
  packageCacheBytes: number;
  /** Bound of unsealed changes across all files, in bytes. */
  dirtyBytes: number;
  /**
   * The cipher directory. With it, in-place package rewrites go through the redo journal
   * CIPHERDIR/.darefs/journal (crash safety), unless `journal` is false or the volume is
   * read-only.
   */
  cipherDir?: string;
  journal?: boolean;
  /**
   * Master mode: the journal's MAC key (journalKey of the master key, FORMAT.md §6). The volume
   * takes it over and zeroes it at close(). Without it (ncrypt mode) every journal record carries
   * a MAC under a key derived from its file's key.
   */
  journalKey?: Buffer;
  /**
   * With the journal: milliseconds between checkpoints (what closed files wrote becomes durable
   * within about this long); 0: only when a bound is reached, an fsync or unmount. Default 5000.
   */
  commitInterval?: number;
  /** Bytes of sealed packages held for the next checkpoint before one runs at once. Default 16 MiB. */
  pinnedBytes?: number;
  /** Told of a timed checkpoint that failed (its batches stay in the journal for the next mount). */
  onCheckpointError?: (err: unknown) => void;
  /** How names are stored (FORMAT.md §8); default plain. The volume takes it over and disposes of it at close(). */
  names?: NameScheme;
}

export const DEFAULT_COMMIT_INTERVAL = 5000;
// Twice the default dirty budget: a checkpoint per two budget flushes of random writes.
export const DEFAULT_PINNED_BYTES = 16 * 1024 * 1024;
/** Journal bytes (records of pinned packages and of zero fills) before a checkpoint runs at once. */
const JOURNAL_BOUND = 64 * 1024 * 1024;

/**
 * The open-file table of a cipher directory: one CipherFile per cipher path, shared by every
 * handle on it, so two handles (or two processes) always see one consistent file. Hard links are
 * one file with several paths: an object is also found by its inode, so every name of a file
 * shares one object (two objects would each seal from their own size and packages, and the
 * later flush would cut or overwrite what the other wrote).
 */
export class Volume {
  readonly cache: PackageCache;
  readonly counters: StoreCounters = { packagesOpened: 0, packagesSealed: 0, authFailures: 0, rewrites: 0 };
  private readonly ctx: FileContext;
  private readonly files = new Map<string, CipherFile>();
  private readonly opening = new Map<string, Promise<CipherFile>>();
  private readonly closing = new Map<string, Promise<void>>();
  /** Open objects by inode ("dev:ino"), and closes in progress by inode. */
  private readonly byInode = new Map<string, CipherFile>();
  private readonly inodeOf = new Map<CipherFile, string>();
  private readonly closingInodes = new Map<string, Promise<void>>();

  /** The cipher directory (symlinks resolved: the journal names files relative to it). */
  private readonly root: string | undefined;
  /**
   * Every access to the cipher directory, confined beneath it (FORMAT.md §6). Without a cipher
   * directory (store tests), confined beneath '/': still no symlink followed.
   */
  readonly dir: CipherDir;
  readonly names: NameScheme;
  /** How user.* extended attributes are stored: sealed when names are encrypted (FORMAT.md §8). */
  readonly xattrs: AttrStore;
  /** Why the journal is off although it was asked for (no write access to .darefs/). */
  readonly journalProblem: string | undefined;
  private readonly journalAuth: JournalAuth;
  /** Files with packages pinned for the next checkpoint, and how many bytes those are. */
  private readonly pending = new Set<CipherFile>();
  private pinnedBytes = 0;
  private readonly pinnedLimit: number;
  /** Files no handle holds that stay open until the checkpoint writes what they pinned. */
  private readonly parked = new Set<CipherFile>();
  private readonly timer: NodeJS.Timeout | undefined;
  private relieving: Promise<void> | undefined;
  private readonly onCheckpointError: ((err: unknown) => void) | undefined;

  constructor(opts: VolumeOptions) {
    this.cache = new PackageCache(opts.packageCacheBytes);
    this.dir = CipherDir.open(opts.cipherDir ?? '/');
    this.names = opts.names ?? new PlainNames();
    this.xattrs = attrStore(this.names, opts.keys, opts.settings.newFileCipher);
    this.root = opts.cipherDir === undefined ? undefined : this.dir.root;
    this.journalAuth = { key: opts.journalKey, keys: opts.keys };
    let journal = this.root !== undefined && opts.journal !== false && !opts.readOnly ? new Journal(this.dir, this.journalAuth) : undefined;
    this.journalProblem = journal?.unusable();
    // Without write access there (the cipher directory's root read-only to us, say) every
    // flush would fail: write without the journal, and let the mount say so.
    if (this.journalProblem !== undefined) journal = undefined;
    this.pinnedLimit = opts.pinnedBytes ?? DEFAULT_PINNED_BYTES;
    this.onCheckpointError = opts.onCheckpointError;
    const checkpointer: Checkpointer = {
      pinned: (file, bytes) => {
        this.pending.add(file);
        this.pinnedBytes += bytes;
        if (this.pinnedBytes > this.pinnedLimit || (this.ctx.journal?.bytes ?? 0) > JOURNAL_BOUND) this.checkpoint();
      },
      checkpoint: () => this.checkpoint(),
      reclaim: () => {
        this.checkpoint();
        this.ctx.journal?.giveBack();
      },
      relieve: () => this.relieve(),
    };
    this.ctx = {
      dir: this.dir,
      keys: opts.keys,
      cache: this.cache,
      settings: opts.settings,
      dirty: new DirtyBudget(opts.dirtyBytes),
      readOnly: opts.readOnly,
      counters: this.counters,
      journal,
      checkpointer: journal && checkpointer,
    };
    const interval = opts.commitInterval ?? DEFAULT_COMMIT_INTERVAL;
    if (journal && interval > 0) {
      this.timer = setInterval(() => {
        try {
          this.checkpoint();
        } catch (err) {
          this.onCheckpointError?.(err);
        }
      }, interval);
      // The timer never keeps the process alive on its own.
      this.timer.unref();
    }
  }

  /**
   * Group commit: syncs the journal once (every record in it is durable), writes every pinned
   * package in place, syncs those files, and retires the journal. Then closes the files no
   * handle holds any more. Synchronous: no request runs in between. A failure holds the journal
   * (the next mount's replay finishes the job) and is thrown.
   */
  checkpoint(): void {
    const journal = this.ctx.journal;
    if (!journal) return;
    if (this.pending.size === 0) {
      // Records of zero fills only (their packages are in place and synced already).
      if (journal.bytes > 0 && !journal.holding) journal.retire();
      return;
    }
    const files = [...this.pending];
    const refused: CipherFile[] = [];
    try {
      journal.sync();
      for (const f of files) {
        const refusal = f.writePinned();
        if (refusal === undefined) continue;
        refused.push(f);
        this.onCheckpointError?.(refusal);
      }
      for (const f of files) if (!refused.includes(f)) f.syncPinned();
    } catch (err) {
      journal.hold(`checkpoint: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    }
    // A file that refused its packages keeps them, and the journal its records (not retired,
    // the next checkpoint tries again); the others are done.
    if (refused.length === 0) journal.retire();
    for (const f of files) {
      if (refused.includes(f)) continue;
      this.pinnedBytes -= f.clearPinned();
      this.pending.delete(f);
    }
    for (const f of [...this.parked]) {
      if (f.hasPinned) continue;
      this.parked.delete(f);
      if (f.refs === 0) void this.closeFile(f).catch(() => undefined);
    }
  }

  /**
   * The dirty budget was exceeded: flushes every file holding unsealed changes (one pass at a
   * time), so that the budget is free again for the files being written.
   */
  private relieve(): Promise<void> {
    this.relieving ??= (async () => {
      try {
        for (const f of new Set([...this.files.values(), ...this.byInode.values()])) {
          if (f.dirtyPackages > 0) await f.flushForBudget();
        }
      } finally {
        this.relieving = undefined;
      }
    })();
    return this.relieving;
  }

  /**
   * Before a rename of `from` (a file, or a directory and everything under it): the journal
   * names files by path, so what it holds of them goes in place first; and the replaced name
   * must never come back empty or torn after a power cut (ext4's auto_da_alloc promise for
   * write-then-rename): their changes are flushed and checkpointed, so the data is durable
   * before the new name is.
   */
  async beforeRename(from: string): Promise<void> {
    if (!this.ctx.journal) return;
    const under = (p: string): boolean => p === from || p.startsWith(from + '/');
    const moving = [...new Set([...this.files.values(), ...this.byInode.values()])].filter((f) => under(f.cipherPath));
    for (const f of moving) await f.flush('none');
    if (moving.some((f) => f.hasPinned)) this.checkpoint();
  }

  /** The stored (sealed) form of a new symlink's target, in the volume's cipher (FORMAT.md §7). */
  sealLink(target: Buffer): Promise<Buffer> {
    return sealLink(this.ctx.keys, this.ctx.settings.newFileCipher, target);
  }

  /** A symlink's plaintext target from its stored one; SealedLinkError naming `name` unless it authenticates. */
  openLink(stored: Buffer, name: string): Promise<Buffer> {
    return openLink(this.ctx.keys, stored, name);
  }

  /** Whether in-place rewrites are journaled. */
  get journaled(): boolean {
    return this.ctx.journal !== undefined;
  }

  /**
   * Finishes what a crash interrupted, before any file is opened: replays a committed journal
   * batch (or drops a torn one). Also with journaling off, since a journal left by an earlier
   * mount must not be forgotten. Records that fail a check are skipped and listed in the result.
   * Undefined without a cipher directory.
   */
  async recover(): Promise<ReplayResult | undefined> {
    if (this.root === undefined) return undefined;
    return (this.ctx.journal ?? new Journal(this.dir, this.journalAuth)).replay();
  }

  /** What a replay would do (a read-only volume, fsck): undefined without a cipher directory. */
  inspectJournal(): JournalInspection | undefined {
    if (this.root === undefined) return undefined;
    return new Journal(this.dir, this.journalAuth).inspect();
  }

  /**
   * The last checkpoint, then closes the files left open for it, the journal and the cipher
   * directory; zeroes the journal key. A failed checkpoint is thrown after that (the journal
   * keeps its batches for the next mount's replay).
   */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    let failure: unknown;
    try {
      this.checkpoint();
    } catch (err) {
      failure = err;
    }
    try {
      for (const f of new Set([...this.parked, ...this.pending])) f.abandon();
      this.parked.clear();
      this.pending.clear();
      this.ctx.journal?.close();
    } finally {
      this.journalAuth.key?.fill(0);
      this.names.dispose();
      this.dir.close();
    }
    // A simulated crash (tests): the process is gone, there is nobody to tell.
    if (failure !== undefined && !(failure instanceof io.SimulatedCrash)) throw failure;
  }

  get readOnly(): boolean {
    return this.ctx.readOnly;
  }

  get openFiles(): number {
    return this.files.size;
  }

  /** Opens (or shares) the file at `cipherPath`; `name` is used in messages. */
  async open(cipherPath: string, name: string): Promise<CipherFile> {
    await this.closing.get(cipherPath);
    for (;;) {
      const existing = this.files.get(cipherPath);
      if (existing) {
        existing.refs++;
        this.parked.delete(existing);
        return existing;
      }
      // Another name of an open file (a hard link): share its object. The stat and the open in
      // CipherFile.open run in one tick, so no operation of ours can change the path between.
      const inode = this.inodeKey(cipherPath);
      const closingInode = inode === undefined ? undefined : this.closingInodes.get(inode);
      if (closingInode) {
        await closingInode;
        continue;
      }
      const other = inode === undefined ? undefined : this.byInode.get(inode);
      if (other) {
        other.refs++;
        this.parked.delete(other);
        return other;
      }
      const key = inode ?? cipherPath;
      let pending = this.opening.get(key);
      if (!pending) {
        pending = CipherFile.open(cipherPath, name, this.ctx);
        this.opening.set(key, pending);
        pending.then(
          (file) => {
            this.opening.delete(key);
            this.files.set(cipherPath, file);
            if (inode !== undefined) this.index(file, inode);
          },
          () => this.opening.delete(key),
        );
      }
      const file = await pending;
      file.refs++;
      return file;
    }
  }

  /** Creates a new empty file (O_EXCL) and returns it open. */
  async create(cipherPath: string, name: string, mode: number, prepare?: (fd: number) => void): Promise<CipherFile> {
    await this.closing.get(cipherPath);
    const file = await CipherFile.create(cipherPath, name, mode, this.ctx, prepare);
    this.files.set(cipherPath, file);
    const inode = this.inodeKey(cipherPath);
    if (inode !== undefined) this.index(file, inode);
    file.refs++;
    return file;
  }

  /**
   * The open object for a path, if any: getattr takes the size from it. With the path's stat,
   * also the object open under another name of the same file (a hard link).
   */
  find(cipherPath: string, st?: fs.Stats | fs.BigIntStats): CipherFile | undefined {
    return this.files.get(cipherPath) ?? (st ? this.byInode.get(`${st.dev}:${st.ino}`) : undefined);
  }

  /** "dev:ino" of the entry at a path (never followed), or undefined when it cannot be stat'ed. */
  private inodeKey(cipherPath: string): string | undefined {
    try {
      const st = this.dir.lstat(cipherPath);
      return `${st.dev}:${st.ino}`;
    } catch {
      return undefined;
    }
  }

  private index(file: CipherFile, inode: string): void {
    this.byInode.set(inode, file);
    this.inodeOf.set(file, inode);
  }

  /**
   * Drops one handle; the last one flushes the file (to the journal: nothing is synced) and
   * closes it, or, while the journal holds packages of it not yet in place, leaves it open for
   * the next checkpoint (reads and a new open use it meanwhile).
   */
  async release(file: CipherFile): Promise<void> {
    file.refs--;
    if (file.refs > 0) return;
    if (this.ctx.journal) {
      let failure: unknown;
      try {
        await file.flush('none');
      } catch (err) {
        failure = err;
      }
      if (failure === undefined) {
        if (file.refs > 0) return;
        if (file.hasPinned) {
          this.parked.add(file);
          return;
        }
      } else {
        await this.closeFile(file).catch(() => undefined);
        throw failure;
      }
    }
    await this.closeFile(file);
  }

  /** Forgets a file no handle holds and closes it. */
  private async closeFile(file: CipherFile): Promise<void> {
    if (file.refs > 0) return;
    const current = this.files.get(file.cipherPath) === file;
    if (current) this.files.delete(file.cipherPath);
    const inode = this.inodeOf.get(file);
    this.inodeOf.delete(file);
    if (inode !== undefined && this.byInode.get(inode) === file) this.byInode.delete(inode);
    const done = file.close();
    if (inode !== undefined) {
      const closingInode: Promise<void> = done
        .catch(() => undefined)
        .finally(() => {
          if (this.closingInodes.get(inode) === closingInode) this.closingInodes.delete(inode);
        });
      this.closingInodes.set(inode, closingInode);
    }
    if (current) {
      // The map holds this very promise, so the entry can recognise and remove itself.
      const closing: Promise<void> = done
        .catch(() => undefined)
        .finally(() => {
          if (this.closing.get(file.cipherPath) === closing) this.closing.delete(file.cipherPath);
        });
      this.closing.set(file.cipherPath, closing);
    }
    await done;
  }

  /** Runs `fn` on the file at `cipherPath`, opening it for the call if it is not open. */
  async withFile<T>(cipherPath: string, name: string, fn: (file: CipherFile) => Promise<T>): Promise<T> {
    const file = await this.open(cipherPath, name);
    try {
      return await fn(file);
    } finally {
      await this.release(file);
    }
  }

  /** Keeps open files attached to their names after a rename of a file or directory. */
  renamed(from: string, to: string, toName: (cipherPath: string) => string): void {
    const target = this.files.get(to);
    if (target && target.cipherPath === to) {
      // The file that was at `to` is replaced: it lives on, nameless, until closed.
      target.unlinked = true;
      this.files.delete(to);
    }
    const moved: CipherFile[] = [];
    for (const [p, file] of this.files) {
      if (p === from || p.startsWith(from + '/')) {
        this.files.delete(p);
        file.cipherPath = to + p.slice(from.length);
        file.name = toName(file.cipherPath);
        file.markNameChanged();
        moved.push(file);
      }
    }
    for (const file of moved) this.files.set(file.cipherPath, file);
  }

  /** RENAME_EXCHANGE swapped `a` and `b` (files or whole directories): open files follow. */
  exchanged(a: string, b: string, toName: (cipherPath: string) => string): void {
    const moved: CipherFile[] = [];
    for (const [p, file] of this.files) {
      const base = p === a || p.startsWith(a + '/') ? a : p === b || p.startsWith(b + '/') ? b : undefined;
      if (base === undefined) continue;
      this.files.delete(p);
      file.cipherPath = (base === a ? b : a) + p.slice(base.length);
      file.name = toName(file.cipherPath);
      file.markNameChanged();
      moved.push(file);
    }
    for (const file of moved) this.files.set(file.cipherPath, file);
  }

  /** The name of an open file was removed; the object stays usable through its handles. */
  unlinked(cipherPath: string, lastName = false): void {
    const file = this.files.get(cipherPath);
    if (!file) return;
    file.unlinked = true;
    this.files.delete(cipherPath);
    if (lastName && file.refs === 0 && this.parked.has(file)) {
      // Nothing reaches it any more: what it holds for the next checkpoint need not go in place
      // (its journal records name a path that is gone, or holds another stream: a replay skips them).
      this.parked.delete(file);
      this.pending.delete(file);
      this.pinnedBytes -= file.clearPinned();
      const inode = this.inodeOf.get(file);
      this.inodeOf.delete(file);
      if (inode !== undefined && this.byInode.get(inode) === file) this.byInode.delete(inode);
      file.abandon();
    }
  }

  /**
   * Before the name `cipherPath` is removed. The journal names files by path: a file it holds
   * packages of that keeps another name (a hard link) has them written in place first. Returns
   * whether this is the file's last name (unlinked() may then drop what it holds).
   */
  beforeUnlink(cipherPath: string): boolean {
    const file = this.files.get(cipherPath);
    if (!file?.hasPinned) return false;
    const lastName = this.dir.lstat(cipherPath).nlink <= 1;
    if (!lastName) this.checkpoint();
    return lastName;
  }

  /** Flushes every open file and makes everything durable (unmount, or a sync of the whole volume). */
  async flushAll(): Promise<void> {
    // Also objects whose first name is gone but another name (hard link) still reaches them.
    const all = (): CipherFile[] => [...new Set([...this.files.values(), ...this.byInode.values()])];
    await Promise.all(all().map((f) => f.flush('none')));
    this.checkpoint();
    await Promise.all(all().map((f) => f.flush('full')));
  }
}


