import { sql, type Kysely } from 'kysely';
import { formatDuration, formatRate, out } from '../util/output.js';
import type { LiveState } from '../ledger/state-machine.js';
import { read, type CounterName } from '../telemetry/counters.js';
import { stageStates, type ExecuteStage } from './stage.js';
import { s3Stall } from '../telemetry/telemetry.js';
import { describeWaiting } from './waiting.js';

/** How `execute` shows progress. */
export interface ProgressOptions {
  /** No progress output at all (`--quiet`). */
  quiet: boolean;
  /** Seconds between plain lines when stderr is not a terminal. */
  intervalSeconds: number;
  /** Redraw a live bar in place (stderr is a TTY). */
  tty: boolean;
  /** Which part of the move this run does: the bar counts that stage's keys. */
  stage?: ExecuteStage;
  /** `--limit`: the run stops after this many keys, so the bar ends there (0: none). */
  limit?: number;
  /** The workers' request figures, to say why nothing moves when S3 stops answering. */
  telemetry?: BigInt64Array;
}

const TERMINAL: CounterName[] = ['conflict', 'missing', 'superseded', 'failed', 'archived'];
const SETTLED: CounterName[] = ['done', ...TERMINAL];

/**
 * The counters that say a key is finished for a stage. A full run and
 * `--delete-only` finish a key when it is `done` (or refused); a
 * `--keep-source` run finishes it when its rows are moved (`db_updated`,
 * the state it parks keys in) or it settles otherwise.
 */
export function stageCounters(stage: ExecuteStage | undefined): CounterName[] {
  return stage === 'keep-source' ? ['dbUpdated', ...TERMINAL] : SETTLED;
}

/** What the stage's own work is called in summaries: "N keys moved", "N sources deleted". */
export function stageWork(stage: ExecuteStage | undefined): { counter: CounterName; noun: string } {
  switch (stage) {
    case 'keep-source':
      return { counter: 'dbUpdated', noun: 'keys moved with their sources kept' };
    case 'delete-only':
      return { counter: 'done', noun: 'sources deleted' };
    default:
      return { counter: 'done', noun: 'keys moved' };
  }
}

/** This process's counters, as published in its runs row. */
export function localCounts(counters: Int32Array): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of [...SETTLED, 'copied', 'dbUpdated', 'requests', 'retries', 'throttles'] as CounterName[]) counts[name] = read(counters, name);
  return counts;
}

/**
 * Publishes this process's counters in its runs row and returns the keys
 * finished (by `names`) by every other running `execute` since `since`.
 * This is how the figures count every process sharing the ledger without a
 * `count(*)` over the ledger: a handful of runs rows are read, whatever the
 * key count.
 */
async function exchange(db: Kysely<any>, schema: string, runId: number, counters: Int32Array, names: CounterName[]): Promise<number> {
  const counts = localCounts(counters);
  const result = await sql<{ others: number }>`
    with me as (
      update ${sql.id(schema, 'runs')} set counts = counts || ${JSON.stringify(counts)}::jsonb, heartbeat_at = now() where id = ${runId}
    )
    select coalesce(sum(${sql.join(
      names.map((name) => sql`coalesce((counts ->> ${name})::bigint, 0)`),
      sql` + `,
    )}), 0)::bigint as others
    from ${sql.id(schema, 'runs')}
    where command = 'execute' and status = 'running' and id <> ${runId}
  `.execute(db);
  return Number(result.rows[0]?.others ?? 0);
}

const clock = (ms: number) => new Date(ms).toTimeString().slice(0, 8);

/**
 * Shows progress while workers run: a live bar on a terminal, a plain line
 * every `--progress-interval` seconds otherwise. The total is read once from
 * the ledger (the live rows this stage claims, through the partial index);
 * after that the figures come from this process's shared counters plus the
 * other running processes' published counters. With `--log-format json`
 * each line also carries `done`, `total`, `rate`, `eta_seconds`.
 */
export async function startProgress(
  db: Kysely<any>,
  schema: string,
  runId: number,
  counters: Int32Array,
  options: ProgressOptions,
  states?: readonly LiveState[],
): Promise<{ stop(): Promise<void> }> {
  const names = stageCounters(options.stage);
  const live = await sql<{ n: number }>`
    select count(*)::int as n from ${sql.id(schema, 'migration_ledger')}
    where state in ('pending', 'copied', 'db_updated', 'deleting') and state = any(${stageStates(options.stage) as unknown as string[]}::text[])
  `.execute(db);
  const ledgerTotal = live.rows[0]?.n ?? 0;
  const total = options.limit && options.limit > 0 ? Math.min(ledgerTotal, options.limit) : ledgerTotal;
  const othersAtStart = await exchange(db, schema, runId, counters, names).catch(() => 0);
  let others = 0;
  // Set while a worker lane finds nothing to claim (see describeWaiting).
  let waiting: string | undefined;
  const started = Date.now();
  const window: Array<{ at: number; settled: number }> = [{ at: started, settled: 0 }];

  const settledNow = () => names.reduce((n, name) => n + read(counters, name), 0) + others;
  const figures = () => {
    const now = Date.now();
    const settled = settledNow();
    window.push({ at: now, settled });
    while (window.length > 2 && now - window[0]!.at > 10_000) window.shift();
    const first = window[0]!;
    const recent = ((settled - first.settled) / Math.max(now - first.at, 1)) * 1000;
    const overall = (settled / Math.max(now - started, 1)) * 1000;
    const etaSeconds = recent > 0 ? Math.max(total - settled, 0) / recent : undefined;
    const fraction = total > 0 ? Math.min(1, settled / total) : 1;
    const stall = options.telemetry ? s3Stall(options.telemetry, now) : undefined;
    // A stall says what it waits for instead of a bare 0.0/s.
    const s3Waiting = stall ? `S3 not answering since ${clock(stall.since)}, retrying (${stall.inFlight} requests in flight); ` : '';
    const rates =
      `${s3Waiting}${formatRate(recent)}/s (10s) ${formatRate(overall)}/s overall, ETA ${etaSeconds === undefined ? '?' : formatDuration(etaSeconds)}, ` +
      `failed ${read(counters, 'failed')}, conflict ${read(counters, 'conflict')}`;
    // Leases held by other runs, backoffs: what a lane with nothing to claim waits for.
    const tail = waiting ? `${rates}; ${waiting}` : rates;
    const fields = {
      progress: true,
      stage: options.stage ?? 'full',
      done: settled,
      total,
      rate: Number(recent.toFixed(2)),
      rate_overall: Number(overall.toFixed(2)),
      eta_seconds: etaSeconds === undefined ? null : Math.round(etaSeconds),
      failed: read(counters, 'failed'),
      conflict: read(counters, 'conflict'),
      ...(stall ? { waiting_for: 's3', s3_silent_since: new Date(stall.since).toISOString(), s3_in_flight: stall.inFlight } : {}),
      ...(waiting ? { waiting } : {}),
    };
    return { settled, fraction, tail, fields };
  };
  const line = () => {
    const f = figures();
    out.info(`progress: ${f.settled}/${total} (${(f.fraction * 100).toFixed(1)}%) ${f.tail}`, f.fields);
  };
  const bar = () => {
    const f = figures();
    const width = 30;
    const filled = Math.round(f.fraction * width);
    return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${f.settled}/${total} ${(f.fraction * 100).toFixed(1)}% ${f.tail}`;
  };

  // The exchange runs on its own clock, so a slow database never delays the display.
  const publisher = setInterval(() => {
    void exchange(db, schema, runId, counters, names)
      .then((n) => {
        others = Math.max(0, n - othersAtStart);
      })
      .catch(() => undefined);
    if (read(counters, 'waitingLanes') === 0) waiting = undefined;
    else void describeWaiting(db, schema, runId, states).then((w) => (waiting = read(counters, 'waitingLanes') > 0 ? w : undefined), () => undefined);
  }, 5_000);
  const finish = async () => {
    clearInterval(publisher);
    await exchange(db, schema, runId, counters, names).catch(() => 0);
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
  const timer = setInterval(line, Math.max(1, options.intervalSeconds) * 1000);
  return {
    async stop() {
      clearInterval(timer);
      // The last line says where the run ended, as the bar's last frame does on a terminal.
      line();
      await finish();
    },
  };
}
