/**
 * CPU time of the processes a benchmark phase keeps busy, read from /proc
 * (Linux): MinIO (our own child) and the Postgres backends serving the
 * benchmark's database. CPU seconds per object are robust to other load on
 * the machine in a way wall-clock rates are not, so the report shows both.
 */
import fs from 'node:fs';

const TICKS_PER_SECOND = 100;

/** utime + stime of a process, in seconds, or undefined if it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** Whether /proc is there to read. */
export const HAVE_PROC = fs.existsSync('/proc/self/stat');

/**
 * Samples the CPU time of every Postgres backend whose process title names
 * `database` ("postgres: user db 127.0.0.1(port) idle"). Backends come and
 * go; each is counted from its first sample (or from the baseline taken at
 * `start`) to its last, so up to one interval of a backend that exits is
 * missed. Background processes (WAL writer, checkpointer) are shared with
 * every other database on the server and are not counted.
 */
export class BackendCpuSampler {
  private readonly baseline = new Map<number, number>();
  private readonly last = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly database: string,
    private readonly intervalMs = 200,
  ) {}

  start(): void {
    this.baseline.clear();
    this.last.clear();
    for (const [pid, cpu] of this.scan()) this.baseline.set(pid, cpu);
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  /** CPU seconds used by the database's backends since `start`. */
  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    let total = 0;
    for (const [pid, cpu] of this.last) total += cpu - (this.baseline.get(pid) ?? 0);
    return total;
  }

  private sample(): void {
    for (const [pid, cpu] of this.scan()) this.last.set(pid, cpu);
  }

  private scan(): Map<number, number> {
    const found = new Map<number, number>();
    if (!HAVE_PROC) return found;
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      try {
        const comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        if (comm !== 'postgres') continue;
        const title = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
        if (!title.includes(` ${this.database} `)) continue;
        const cpu = processCpuSeconds(pid);
        if (cpu !== undefined) found.set(pid, cpu);
      } catch {
        // Gone between readdir and read.
      }
    }
    return found;
  }
}
