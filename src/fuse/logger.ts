/**
 * Daemon log: one line per problem (each distinct problem once), and operation traces only with
 * --debug. Callers pass messages that never contain keys or passwords.
 */
export class Logger {
  private readonly seen = new Set<string>();

  constructor(
    private readonly sink: (line: string) => void,
    readonly debugEnabled = false,
  ) {}

  /** Logs a problem; with `onceKey`, only the first time that key is seen. */
  problem(message: string, onceKey?: string): void {
    if (onceKey !== undefined) {
      if (this.seen.has(onceKey)) return;
      if (this.seen.size > 10_000) this.seen.clear();
      this.seen.add(onceKey);
    }
    this.sink(`${new Date().toISOString()} darefs: ${message}`);
  }

  info(message: string): void {
    this.sink(`${new Date().toISOString()} darefs: ${message}`);
  }

  debug(message: () => string): void {
    if (this.debugEnabled) this.sink(`${new Date().toISOString()} darefs[debug]: ${message()}`);
  }
}
