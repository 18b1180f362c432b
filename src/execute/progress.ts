import { sql, type Kysely } from 'kysely';
import { formatDuration, formatRate, out } from '../util/output.js';
import type { LiveState } from '../ledger/state-machine.js';
import { read, type CounterName } from './counters.js';
import { describeWaiting } from './waiting.js';

/** How `execute` shows progress. */
export interface ProgressOptions {
  /** No progress output at all (`--quiet`). */
  quiet: boolean;
  /** Seconds between plain lines when stderr is not a terminal. */
  intervalSeconds: number;
  /** Redraw a live bar in place (stderr is a TTY). */
  tty: boolean;
}

const SETTLED: CounterName[] = ['done', 'conflict', 'missing', 'superseded', 'failed', 'archived'];

/** This process's counters, as published in its runs row. */
export function localCounts(counters: Int32Array): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of [...SETTLED, 'copied', 'dbUpdated', 'requests', 'retries', 'throttles'] as CounterName[]) counts[name] = read(counters, name);
  return counts;
}

/**
 * Publishes this process's counters in its runs row and returns the keys
 * settled by every other running `execute` since `since`. This is how the
 * figures count every process sharing the ledger without a `count(*)` over
 * the ledger: a handful of runs rows are read, whatever the key count.
 */
async function exchange(db: Kysely<any>, schema: string, runId: number, counters: Int32Array): Promise<number> {
  const counts = localCounts(counters);
  const result = await sql<{ others: number }>`
    with me as (
      update ${sql.id(schema, 'runs')} set counts = ${JSON.stringify(counts)}::jsonb, heartbeat_at = now() where id = ${runId}
    )
    select coalesce(sum(${sql.join(
      SETTLED.map((name) => sql`coalesce((counts ->> ${name})::bigint, 0)`),
      sql` + `,
    )}), 0)::bigint as others
    from ${sql.id(schema, 'runs')}
    where command = 'execute' and status = 'running' and id <> ${runId}
  `.execute(db);
  return Number(result.rows[0]?.others ?? 0);
}

/**
 * Shows progress while workers run: a live bar on a terminal, a plain line
 * every `--progress-interval` seconds otherwise. The total is read once from
 * the ledger (live rows, through the partial index); after that the figures
 * come from this process's shared counters plus the other running
 * processes' published counters.
 */
export async function startProgress(
  db: Kysely<any>,
  schema: string,
  runId: number,
  counters: Int32Array,
  options: ProgressOptions,
  states?: readonly LiveState[],
): Promise<{ stop(): Promise<void> }> {
  const live = await sql<{ n: number }>`
    select count(*)::int as n from ${sql.id(schema, 'migration_ledger')} where state in ('pending', 'copied', 'db_updated')
  `.execute(db);
  const total = live.rows[0]?.n ?? 0;
  const othersAtStart = await exchange(db, schema, runId, counters).catch(() => 0);
  let others = 0;
  // Set while a worker lane finds nothing to claim (see describeWaiting).
  let waiting: string | undefined;
  const started = Date.now();
  const window: Array<{ at: number; settled: number }> = [{ at: started, settled: 0 }];

  const settledNow = () => SETTLED.reduce((n, name) => n + read(counters, name), 0) + others;
  const figures = () => {
    const now = Date.now();
    const settled = settledNow();
    window.push({ at: now, settled });
    while (window.length > 2 && now - window[0]!.at > 10_000) window.shift();
    const first = window[0]!;
    const recent = ((settled - first.settled) / Math.max(now - first.at, 1)) * 1000;
    const overall = (settled / Math.max(now - started, 1)) * 1000;
    const eta = recent > 0 ? formatDuration(Math.max(total - settled, 0) / recent) : '?';
    const fraction = total > 0 ? Math.min(1, settled / total) : 1;
    const tail =
      `${formatRate(recent)}/s (10s) ${formatRate(overall)}/s overall, ETA ${eta}, ` +
      `failed ${read(counters, 'failed')}, conflict ${read(counters, 'conflict')}`;
    return { settled, fraction, tail: waiting ? `${tail}; ${waiting}` : tail };
  };
  const line = () => {
    const f = figures();
    return `progress: ${f.settled}/${total} (${(f.fraction * 100).toFixed(1)}%) ${f.tail}`;
  };
  const bar = () => {
    const f = figures();
    const width = 30;
    const filled = Math.round(f.fraction * width);
    return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${f.settled}/${total} ${(f.fraction * 100).toFixed(1)}% ${f.tail}`;
  };

  // The exchange runs on its own clock, so a slow database never delays the display.
  const publisher = setInterval(() => {
    void exchange(db, schema, runId, counters)
      .then((n) => {
        others = Math.max(0, n - othersAtStart);
      })
      .catch(() => undefined);
    if (read(counters, 'waitingLanes') === 0) waiting = undefined;
    else void describeWaiting(db, schema, runId, states).then((w) => (waiting = read(counters, 'waitingLanes') > 0 ? w : undefined), () => undefined);
  }, 5_000);
  const finish = async () => {
    clearInterval(publisher);
    await exchange(db, schema, runId, counters).catch(() => 0);
  };
  if (options.quiet) return { stop: finish };
  if (options.tty) {
    const timer = setInterval(() => process.stderr.write(`\r\x1b[2K${bar()}`), 250);
    return {
      async stop() {
        clearInterval(timer);
        process.stderr.write(`\r\x1b[2K${bar()}\n`);
        await finish();
      },
    };
  }
  const timer = setInterval(() => out.info(line()), Math.max(1, options.intervalSeconds) * 1000);
  return {
    async stop() {
      clearInterval(timer);
      await finish();
    },
  };
}
