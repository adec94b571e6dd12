// A one-line progress display on stderr for long runs: bytes done, rate, and
// with a known total the percentage and ETA. Shown only when the stream is a
// terminal, and only once the run has lasted `delayMs`; silent otherwise.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 -> "1.5 KiB" */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${UNITS[u]}`;
}

/** 75 -> "1:15", 3725 -> "1:02:05" */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export interface ProgressState {
  label: string;
  done: number;
  total?: number;
  elapsedMs: number;
}

/** "decrypt big.enc: 512 MiB of 1.00 GiB (50%), 210 MiB/s, ETA 0:02" */
export function renderProgress(s: ProgressState): string {
  const seconds = s.elapsedMs / 1000;
  const rate = seconds > 0 ? s.done / seconds : 0;
  let line = `${s.label}: ${formatBytes(s.done)}`;
  if (s.total !== undefined && s.total > 0) {
    const pct = Math.min(100, Math.floor((100 * s.done) / s.total));
    line += ` of ${formatBytes(s.total)} (${pct}%)`;
  }
  line += `, ${formatBytes(Math.round(rate))}/s`;
  if (s.total !== undefined && s.total > 0 && rate > 0) {
    line += `, ETA ${formatDuration(Math.max(0, s.total - s.done) / rate)}`;
  }
  return line;
}

export interface ProgressOptions {
  label: string;
  /** Total bytes when known (a regular input file). */
  total?: number;
  /** Where to draw; process.stderr by default. */
  stream?: NodeJS.WriteStream;
  /** Force on or off; by default on when the stream is a terminal. */
  enabled?: boolean;
  /** Draw nothing before the run has lasted this long (1 s). */
  delayMs?: number;
  /** Redraw interval (250 ms). */
  intervalMs?: number;
}

export class Progress {
  private done = 0;
  private readonly start = Date.now();
  private readonly timer: NodeJS.Timeout | undefined;
  private drawn = false;
  private readonly stream: NodeJS.WriteStream;

  constructor(private readonly opts: ProgressOptions) {
    this.stream = opts.stream ?? process.stderr;
    const enabled = opts.enabled ?? this.stream.isTTY === true;
    if (enabled) {
      const delay = opts.delayMs ?? 1000;
      this.timer = setInterval(() => {
        if (Date.now() - this.start >= delay) this.draw();
      }, opts.intervalMs ?? 250);
      this.timer.unref();
    }
  }

  add(bytes: number): void {
    this.done += bytes;
  }

  private draw(): void {
    let line = renderProgress({ label: this.opts.label, done: this.done, total: this.opts.total, elapsedMs: Date.now() - this.start });
    const width = this.stream.columns;
    if (typeof width === 'number' && width > 1 && line.length >= width) line = line.slice(0, width - 1);
    this.stream.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }

  /** Stops redrawing and erases the line, so what follows starts clean. */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.drawn) {
      this.stream.write('\r\x1b[K');
      this.drawn = false;
    }
  }
}
