import { sql, type Kysely } from 'kysely';
import { formatDuration, formatRate, out } from '../util/output.js';
import { read } from './counters.js';

/** How `execute` shows progress. */
export interface ProgressOptions {
  /** No progress output at all (`--quiet`). */
  quiet: boolean;
  /** Seconds between plain lines when stderr is not a terminal. */
  intervalSeconds: number;
  /** Redraw one line in place (stderr is a TTY). */
  tty: boolean;
}

/**
 * Prints progress while workers run. The total is read once from the
 * ledger (live rows, through the partial index); after that the figures
 * come from the shared counters, so progress costs the database nothing.
 */
export async function startProgress(
  db: Kysely<any>,
  schema: string,
  counters: Int32Array,
  options: ProgressOptions,
): Promise<{ stop(): void }> {
  if (options.quiet) return { stop: () => undefined };
  const live = await sql<{ n: number }>`
    select count(*)::int as n from ${sql.id(schema, 'migration_ledger')} where state in ('pending', 'copied', 'db_updated')
  `.execute(db);
  const total = live.rows[0]?.n ?? 0;
  const started = Date.now();
  const window: Array<{ at: number; done: number }> = [{ at: started, done: 0 }];

  const line = () => {
    const now = Date.now();
    const settled = ['done', 'conflict', 'missing', 'superseded', 'failed'].reduce((n, c) => n + read(counters, c as 'done'), 0);
    window.push({ at: now, done: settled });
    while (window.length > 2 && now - window[0]!.at > 10_000) window.shift();
    const first = window[0]!;
    const recent = ((settled - first.done) / Math.max(now - first.at, 1)) * 1000;
    const overall = (settled / Math.max(now - started, 1)) * 1000;
    const remaining = Math.max(total - settled, 0);
    const eta = recent > 0 ? formatDuration(remaining / recent) : '?';
    const pct = total > 0 ? ((settled / total) * 100).toFixed(1) : '100.0';
    return (
      `progress: ${settled}/${total} (${pct}%) ${formatRate(recent)}/s last 10s, ${formatRate(overall)}/s overall, ETA ${eta}; ` +
      `failed ${read(counters, 'failed')}, conflict ${read(counters, 'conflict')}, retries ${read(counters, 'retries')}, throttles ${read(counters, 'throttles')}`
    );
  };

  if (options.tty) {
    const timer = setInterval(() => process.stderr.write(`\r\x1b[2K${line()}`), 250);
    return {
      stop() {
        clearInterval(timer);
        process.stderr.write(`\r\x1b[2K${line()}\n`);
      },
    };
  }
  const timer = setInterval(() => out.info(line()), Math.max(1, options.intervalSeconds) * 1000);
  return { stop: () => clearInterval(timer) };
}
