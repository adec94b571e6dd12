/**
 * The kernel's view of the tree: which node ID stands for which cipher inode, and under which
 * names the kernel has looked it up.
 *
 * One node ID per cipher inode (keyed by the inode's device and number), not one per path as
 * libfuse's high-level API has it: every name of a hard-linked file is then one kernel inode, so a
 * link, chmod, chown or unlink through one name shows at once through the others (pjdfstest
 * link/00, rename/00). A node remembers each (parent, name) it was found under; operations use
 * the most recently seen one, since the FUSE operations below us work by path.
 *
 * The kernel counts lookups (nlookup): every successful LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK,
 * LINK and READDIRPLUS entry adds one, FORGET takes them back. A node is dropped only at zero,
 * whatever happened to its names meanwhile.
 */

export const ROOT_ID = 1;

interface Alias {
  parent: number;
  name: string;
}

export interface Node {
  readonly id: number;
  /** `dev:ino` of the cipher inode; '' for the root. */
  key: string;
  /** File type bits (S_IFMT) when it was found: an inode number reused for another type is a new node. */
  type: number;
  nlookup: number;
  /** Names it is known under, most recent last. Empty once every known name was removed. */
  aliases: Alias[];
}

const S_IFMT = 0o170000;

function aliasKey(parent: number, name: string): string {
  return `${parent}/${name}`;
}

export class NodeNotFoundError extends Error {
  override readonly name = 'NodeNotFoundError';
  readonly code = 'ESTALE';
}

export class NodeTable {
  private readonly byId = new Map<number, Node>();
  private readonly byKey = new Map<string, Node>();
  /** `parent/name` -> the node that name leads to (as far as we know). */
  private readonly byAlias = new Map<string, Node>();
  private nextId = ROOT_ID + 1;

  constructor() {
    this.byId.set(ROOT_ID, { id: ROOT_ID, key: '', type: 0o040000, nlookup: 1, aliases: [] });
  }

  get size(): number {
    return this.byId.size;
  }

  get(id: number): Node {
    const node = this.byId.get(id);
    if (!node) throw new NodeNotFoundError(`no node ${id} (the kernel used a node ID it was never given or has forgotten)`);
    return node;
  }

  has(id: number): boolean {
    return this.byId.has(id);
  }

  /** The plaintext path ('/' for the root, '/a/b' below) by the node's most recent name. */
  path(id: number): string {
    if (id === ROOT_ID) return '/';
    const names: string[] = [];
    let at = this.get(id);
    for (let depth = 0; at.id !== ROOT_ID; depth++) {
      const alias = at.aliases[at.aliases.length - 1];
      // Directories have one name; a file whose names were all removed has none (open-unlinked).
      if (!alias || depth > 4096) throw new NodeNotFoundError(`node ${id} has no name left`);
      names.push(alias.name);
      at = this.get(alias.parent);
    }
    return '/' + names.reverse().join('/');
  }

  /** The path of `name` in directory `parent`. */
  childPath(parent: number, name: string): string {
    const dir = this.path(parent);
    return dir === '/' ? '/' + name : dir + '/' + name;
  }

  /**
   * Records a successful lookup of `name` in `parent` that found cipher inode `dev:ino` of mode
   * `mode`, and counts it. Returns the node ID to give the kernel.
   */
  found(parent: number, name: string, dev: number, ino: number, mode: number): number {
    const key = `${dev}:${ino}`;
    const type = mode & S_IFMT;
    let node = this.byKey.get(key);
    if (node && node.type !== type) {
      // The inode number was freed and reused for another kind of file: a new kernel inode (the
      // kernel marks an inode bad whose type changes).
      this.byKey.delete(key);
      node.key = '';
      node = undefined;
    }
    if (!node) {
      node = { id: this.allocate(), key, type, nlookup: 0, aliases: [] };
      this.byId.set(node.id, node);
      this.byKey.set(key, node);
    }
    node.nlookup++;
    this.addAlias(node, parent, name);
    return node.id;
  }

  /** The kernel gave back `n` lookups of `id`. */
  forget(id: number, n: number): void {
    if (id === ROOT_ID) return;
    const node = this.byId.get(id);
    if (!node) return;
    node.nlookup -= n;
    if (node.nlookup > 0) return;
    this.byId.delete(id);
    if (node.key && this.byKey.get(node.key) === node) this.byKey.delete(node.key);
    for (const a of node.aliases) {
      const key = aliasKey(a.parent, a.name);
      if (this.byAlias.get(key) === node) this.byAlias.delete(key);
    }
  }

  /** `name` was removed from `parent` (unlink, rmdir, or replaced by a rename). */
  removed(parent: number, name: string): void {
    const key = aliasKey(parent, name);
    const node = this.byAlias.get(key);
    if (!node) return;
    this.byAlias.delete(key);
    node.aliases = node.aliases.filter((a) => a.parent !== parent || a.name !== name);
    if (node.aliases.length === 0 && node.key && this.byKey.get(node.key) === node) {
      // Its last known name is gone: a file made later under a reused inode number is another file.
      this.byKey.delete(node.key);
    }
  }

  /** `name` in `parent` was renamed to `newName` in `newParent` (whatever it replaced is gone). */
  renamed(parent: number, name: string, newParent: number, newName: string): void {
    if (parent === newParent && name === newName) return;
    this.removed(newParent, newName);
    const node = this.byAlias.get(aliasKey(parent, name));
    if (!node) return;
    this.byAlias.delete(aliasKey(parent, name));
    for (const a of node.aliases) if (a.parent === parent && a.name === name) Object.assign(a, { parent: newParent, name: newName });
    this.byAlias.set(aliasKey(newParent, newName), node);
  }

  /** RENAME_EXCHANGE: the two names swap their nodes. */
  exchanged(parent: number, name: string, newParent: number, newName: string): void {
    const k1 = aliasKey(parent, name);
    const k2 = aliasKey(newParent, newName);
    const n1 = this.byAlias.get(k1);
    const n2 = this.byAlias.get(k2);
    this.byAlias.delete(k1);
    this.byAlias.delete(k2);
    if (n1) {
      for (const a of n1.aliases) if (a.parent === parent && a.name === name) Object.assign(a, { parent: newParent, name: newName });
      this.byAlias.set(k2, n1);
    }
    if (n2) {
      for (const a of n2.aliases) if (a.parent === newParent && a.name === newName && !(n1 === n2)) Object.assign(a, { parent, name });
      this.byAlias.set(k1, n2);
    }
  }

  private addAlias(node: Node, parent: number, name: string): void {
    const key = aliasKey(parent, name);
    const holder = this.byAlias.get(key);
    if (holder && holder !== node) {
      // The name now leads to another inode (changed behind our back, in the cipher directory).
      holder.aliases = holder.aliases.filter((a) => a.parent !== parent || a.name !== name);
    }
    this.byAlias.set(key, node);
    const i = node.aliases.findIndex((a) => a.parent === parent && a.name === name);
    if (i >= 0) node.aliases.splice(i, 1);
    node.aliases.push({ parent, name });
    // A file with thousands of names looked up keeps a bounded list (the newest are the useful ones).
    if (node.aliases.length > 64) {
      const old = node.aliases.shift() as Alias;
      this.byAlias.delete(aliasKey(old.parent, old.name));
    }
  }

  private allocate(): number {
    while (this.byId.has(this.nextId)) this.nextId++;
    return this.nextId++;
  }
}
