import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import type { StoredConfig } from '../ledger/ledger-config.js';
import { processExists } from '../util/process-exists.js';
import { readStateCounts } from '../ledger/ledger-counts.js';
import { ALL_STATES, UNSETTLED_STATES, type LedgerState } from '../ledger/state-machine.js';
import {
  KEYS_PER_STATE,
  LISTED_STATES,
  TOP_ERRORS,
  type ListedState,
  type MinuteActivity,
  type Report,
  type ReportKey,
  type ReportRun,
} from './report-types.js';

/** The window "current rate" and the ETA are measured over. */
const CURRENT_WINDOW_SECONDS = 300;

/** ISO string of a timestamp from pg (a Date), or null. */
export function iso(value: Date | string | null | undefined): string | null {
  if (value == null) return null;
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

const round = (n: number, digits = 2) => Number(n.toFixed(digits));

/**
 * Reads everything `report` shows from the ledger schema. Read-only: it
 * takes no locks beyond a plain SELECT's, so it is safe during a run, and
 * needs nothing but the ledger tables (not the views, not S3).
 *
 * Each figure is one statement; they are not one snapshot, so during a run
 * two figures may disagree by the keys settled between statements. Its cost
 * does not grow with the ledger: counts come from `ledger_counts`.
 */
export async function collectReport(db: Kysely<any>, schema: string): Promise<Report> {
  const ledger = sql.id(schema, 'migration_ledger');
  const counts = sql.id(schema, 'ledger_counts');
  // Every figure but the listed keys comes from ledger_counts, which the
  // ledger's statement triggers keep (migration 0009-ledger-counts): a few
  // hundred rows whatever the ledger's size. The listed keys are found by
  // the exceptions index. Nothing here reads the ledger whole.

  const summary = (
    await sql<{ now: Date; last_activity: Date | null; since: Date | null; settled_at_start: string | null }>`
      select now() as now,
             (select max(changed_at) from ${counts} where kind = 'activity') as last_activity,
             r.started_at as since, r.counts ->> 'settledAtStart' as settled_at_start
      from (select 1) as one
      left join (select started_at, counts from ${sql.id(schema, 'runs')} where command = 'execute' order by started_at limit 1) as r on true
    `.execute(db)
  ).rows[0]!;

  const stateCounts = await readStateCounts(db, schema);
  const states = Object.fromEntries(ALL_STATES.map((s) => [s, 0])) as Record<LedgerState, number>;
  for (const [state, n] of Object.entries(stateCounts)) states[state as LedgerState] = n;
  const planned = Object.values(states).reduce((a, b) => a + b, 0);
  const remaining = UNSETTLED_STATES.reduce((n, s) => n + states[s], 0);
  const settled = planned - remaining;

  const owners = (await sql<{ owner: string; keys: number; locked_until: Date; expired: boolean }>`
    select label as owner, sum(n)::int as keys, max(until) as locked_until, max(until) < now() as expired
    from ${counts} where kind = 'lease'
    group by label having sum(n) > 0
    order by keys desc, owner
  `.execute(db)).rows;
  const held = owners.filter((o) => !o.expired).reduce((a, o) => a + o.keys, 0);
  const expired = owners.filter((o) => o.expired).reduce((a, o) => a + o.keys, 0);

  const throughput = await readThroughput(db, counts, summary, held > 0, remaining);

  const attempts = (await sql<{ attempts: number; keys: number }>`
    select label::int as attempts, sum(n)::int as keys from ${counts} where kind = 'attempts'
    group by label having sum(n) <> 0 order by 1
  `.execute(db)).rows;

  const errors = (await sql<{ error: string; keys: number; states: Record<string, number> }>`
    with grouped as (
      select label as error, state, sum(n)::int as n from ${counts} where kind = 'error' group by 1, 2 having sum(n) <> 0
    )
    select error, sum(n)::int as keys, jsonb_object_agg(state, n) as states
    from grouped group by error order by keys desc, error limit ${TOP_ERRORS}
  `.execute(db)).rows;

  const exceptions = {} as Report['exceptions'];
  for (const state of LISTED_STATES) {
    exceptions[state] = { count: states[state], keys: states[state] > 0 ? await listKeys(db, ledger, state) : [] };
  }

  return {
    version: 1,
    generatedAt: iso(summary.now)!,
    ledgerSchema: schema,
    ledgerConfig: await readLedgerConfig(db, schema),
    planned,
    states,
    progress: {
      settled,
      remaining,
      percentSettled: planned === 0 ? 100 : round((settled / planned) * 100),
      percentDone: planned === 0 ? 100 : round((states.done / planned) * 100),
    },
    throughput,
    attempts,
    errors,
    exceptions,
    leases: {
      held,
      expired,
      owners: owners.slice(0, 20).map((o) => ({ owner: o.owner, keys: o.keys, lockedUntil: iso(o.locked_until)!, expired: o.expired })),
    },
    lastActivityAt: planned === 0 ? null : iso(summary.last_activity),
    runs: await readRuns(db, schema),
  };
}

async function readThroughput(
  db: Kysely<any>,
  counts: ReturnType<typeof sql.id>,
  summary: { now: Date; since: Date | null; settled_at_start: string | null },
  active: boolean,
  remaining: number,
): Promise<Report['throughput']> {
  const { now, since } = summary;
  // Per-minute counters: the label is the minute's epoch (see 0009-ledger-counts).
  const minutes = (await sql<{ minute: Date; copied: number; done: number; settled: number }>`
    with bounds as (select date_trunc('minute', now()) - interval '59 minutes' as start),
    events as (
      select to_timestamp(label::bigint) as minute, kind, sum(n) as n
      from ${counts}, bounds
      where kind in ('copied', 'done', 'settled') and label::bigint >= extract(epoch from bounds.start)
      group by 1, 2
    )
    select m.minute,
           coalesce(sum(events.n) filter (where events.kind = 'copied'), 0)::int as copied,
           coalesce(sum(events.n) filter (where events.kind = 'done'), 0)::int as done,
           coalesce(sum(events.n) filter (where events.kind = 'settled'), 0)::int as settled
    from bounds, generate_series(bounds.start, date_trunc('minute', now()), interval '1 minute') as m(minute)
    left join events on events.minute = m.minute
    group by m.minute order by m.minute
  `.execute(db)).rows;
  const lastHour: MinuteActivity[] = minutes.map((m) => ({ minute: iso(m.minute)!, copied: m.copied, done: m.done, settled: m.settled }));

  if (!since) {
    return { since: null, settled: 0, seconds: 0, overallPerSecond: 0, currentPerSecond: 0, etaSeconds: remaining === 0 ? 0 : null, lastHour };
  }
  // Settled since the first execute: all settled now, less those settled
  // when it started (recorded in its runs row); for a run recorded before
  // that was kept, the minutes since its start. The current rate counts the
  // minutes that overlap the last five (minute granularity).
  const counted = (await sql<{ total: string; since_minutes: string; recent: string; last_settled: Date | null }>`
    select coalesce(sum(n), 0)::text as total,
           coalesce(sum(n) filter (where label::bigint >= extract(epoch from date_trunc('minute', ${since}::timestamptz))), 0)::text as since_minutes,
           coalesce(sum(n) filter (where label::bigint >= extract(epoch from date_trunc('minute', now() - make_interval(secs => ${CURRENT_WINDOW_SECONDS})))), 0)::text as recent,
           max(to_timestamp(label::bigint) + interval '1 minute') filter (where n > 0) as last_settled
    from ${counts} where kind = 'settled'
  `.execute(db)).rows[0]!;
  const settledSince =
    summary.settled_at_start != null ? Number(counted.total) - Number(summary.settled_at_start) : Number(counted.since_minutes);
  const lastSettled = counted.last_settled && counted.last_settled > now ? now : counted.last_settled;
  // While leases are held the run is going on, so the clock still runs;
  // afterwards it stops at the last settle, so a report read a day later
  // does not dilute the rate.
  const end = active || !lastSettled ? now : new Date(Math.max(lastSettled.getTime(), since.getTime()));
  const seconds = Math.max((end.getTime() - since.getTime()) / 1000, 0);
  // The window the recent minutes cover: from the start of the oldest one (or since) to now.
  const windowStart = Math.max(since.getTime(), Math.floor((now.getTime() - CURRENT_WINDOW_SECONDS * 1000) / 60_000) * 60_000);
  const windowSeconds = Math.max((now.getTime() - windowStart) / 1000, 0);
  const current = windowSeconds > 0 ? Number(counted.recent) / windowSeconds : 0;
  return {
    since: iso(since),
    settled: settledSince,
    seconds: round(seconds, 1),
    overallPerSecond: seconds > 0 ? round(settledSince / seconds) : 0,
    currentPerSecond: round(current),
    etaSeconds: remaining === 0 ? 0 : current > 0 ? Math.ceil(remaining / current) : null,
    lastHour,
  };
}

async function listKeys(db: Kysely<any>, ledger: ReturnType<typeof sql.id>, state: ListedState): Promise<ReportKey[]> {
  const rows = (await sql<{
    id: number;
    src_key: string;
    dst_key: string;
    row_ids: string[];
    rows_skipped: string[] | null;
    failed_state: string | null;
    attempts: number;
    failures: number;
    last_error: string | null;
    updated_at: Date;
  }>`
    select id, src_key, dst_key, row_ids, rows_skipped, failed_state, attempts, failures, last_error, updated_at
    from ${ledger} where state = ${state} order by id limit ${KEYS_PER_STATE}
  `.execute(db)).rows;
  return rows.map((r) => ({
    id: r.id,
    srcKey: r.src_key,
    dstKey: r.dst_key,
    rowIds: r.row_ids,
    rowsSkipped: r.rows_skipped ?? [],
    failedState: r.failed_state,
    attempts: r.attempts,
    failures: r.failures,
    error: r.last_error,
    updatedAt: iso(r.updated_at)!,
  }));
}

async function readLedgerConfig(db: Kysely<any>, schema: string): Promise<Report['ledgerConfig']> {
  const row = (await sql<StoredConfig>`select * from ${sql.id(schema, 'ledger_config')}`.execute(db)).rows[0];
  if (!row) return null;
  return {
    source: `s3://${row.source_bucket}/${row.source_prefix}`,
    target: `s3://${row.target_bucket}/${row.target_prefix}`,
    table: row.table_name,
    idColumn: row.id_column,
    pathColumn: row.path_column,
  };
}

async function readRuns(db: Kysely<any>, schema: string): Promise<ReportRun[]> {
  // Columns that report shows as they are come out under their report names;
  // the timestamps are turned into ISO strings and a duration below.
  type RunRow = Pick<ReportRun, 'id' | 'command' | 'status' | 'exitCode' | 'host' | 'pid' | 'config' | 'counts'> & { started_at: Date; finished_at: Date | null };
  const rows = (await sql<RunRow>`
    select id, command, status, started_at, finished_at, exit_code as "exitCode", host, pid, config, counts
    from ${sql.id(schema, 'runs')} order by id
  `.execute(db)).rows;
  const here = os.hostname();
  return rows.map(({ started_at, finished_at, ...r }) => ({
    ...r,
    startedAt: iso(started_at)!,
    finishedAt: iso(finished_at),
    seconds: finished_at ? round((finished_at.getTime() - started_at.getTime()) / 1000, 1) : null,
    processAlive: r.status === 'running' && r.host === here && r.pid != null ? processExists(r.pid) : null,
  }));
}
