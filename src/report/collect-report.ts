import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import { ALL_STATES, UNSETTLED_STATES, stateIn, type LedgerState } from '../ledger/state-machine.js';
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
 * two figures may disagree by the keys settled between statements.
 */
export async function collectReport(db: Kysely<any>, schema: string): Promise<Report> {
  const ledger = sql.id(schema, 'migration_ledger');
  const unsettled = stateIn(UNSETTLED_STATES);

  const summary = (
    await sql<{
      now: Date;
      last_activity: Date | null;
      held: number;
      expired: number;
      since: Date | null;
    }>`
      select now() as now,
             (select max(updated_at) from ${ledger}) as last_activity,
             (select count(*) from ${ledger} where ${unsettled}
                and locked_by is not null and locked_until >= now())::int as held,
             (select count(*) from ${ledger} where ${unsettled}
                and locked_by is not null and locked_until < now())::int as expired,
             (select min(started_at) from ${sql.id(schema, 'runs')} where command = 'execute') as since
    `.execute(db)
  ).rows[0]!;

  const stateRows = (await sql<{ state: LedgerState; n: number }>`
    select state, count(*)::int as n from ${ledger} group by state
  `.execute(db)).rows;
  const states = Object.fromEntries(ALL_STATES.map((s) => [s, 0])) as Record<LedgerState, number>;
  for (const row of stateRows) states[row.state] = row.n;
  const planned = Object.values(states).reduce((a, b) => a + b, 0);
  const remaining = UNSETTLED_STATES.reduce((n, s) => n + states[s], 0);
  const settled = planned - remaining;

  const throughput = await readThroughput(db, ledger, summary.since, summary.now, summary.held > 0, remaining);

  const attempts = (await sql<{ attempts: number; keys: number }>`
    select attempts, count(*)::int as keys from ${ledger} group by attempts order by attempts
  `.execute(db)).rows;

  const errors = (await sql<{ error: string; keys: number; states: Record<string, number> }>`
    with grouped as (
      select regexp_replace(last_error, '"[^"]*"', '"…"', 'g') as error, state, count(*)::int as n
      from ${ledger} where last_error is not null group by 1, 2
    )
    select error, sum(n)::int as keys, jsonb_object_agg(state, n) as states
    from grouped group by error order by keys desc, error limit ${TOP_ERRORS}
  `.execute(db)).rows;

  const exceptions = {} as Report['exceptions'];
  for (const state of LISTED_STATES) {
    exceptions[state] = { count: states[state], keys: states[state] > 0 ? await listKeys(db, ledger, state) : [] };
  }

  const owners = (await sql<{ owner: string; keys: number; locked_until: Date; expired: boolean }>`
    select locked_by as owner, count(*)::int as keys, max(locked_until) as locked_until,
           max(locked_until) < now() as expired
    from ${ledger}
    where ${unsettled} and locked_by is not null
    group by locked_by order by keys desc, owner limit 20
  `.execute(db)).rows;

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
      held: summary.held,
      expired: summary.expired,
      owners: owners.map((o) => ({ owner: o.owner, keys: o.keys, lockedUntil: iso(o.locked_until)!, expired: o.expired })),
    },
    lastActivityAt: iso(summary.last_activity),
    runs: await readRuns(db, schema),
  };
}

async function readThroughput(
  db: Kysely<any>,
  ledger: ReturnType<typeof sql.id>,
  since: Date | null,
  now: Date,
  active: boolean,
  remaining: number,
): Promise<Report['throughput']> {
  // A key's settle time: when it reached its terminal state (see 0002-audit-views).
  const settledAt = sql`case when not ${stateIn(UNSETTLED_STATES)}
                             then coalesce(done_at, updated_at) end`;
  const minutes = (await sql<{ minute: Date; copied: number; done: number; settled: number }>`
    with bounds as (select date_trunc('minute', now()) - interval '59 minutes' as start),
    recent as (
      select copied_at, done_at, ${settledAt} as settled_at
      from ${ledger}, bounds
      where copied_at >= bounds.start or done_at >= bounds.start or updated_at >= bounds.start
    ),
    events as (
      select date_trunc('minute', copied_at) as minute, 'copied' as kind from recent, bounds where copied_at >= bounds.start
      union all
      select date_trunc('minute', done_at), 'done' from recent, bounds where done_at >= bounds.start
      union all
      select date_trunc('minute', settled_at), 'settled' from recent, bounds where settled_at >= bounds.start
    )
    select m.minute,
           count(events.kind) filter (where events.kind = 'copied')::int as copied,
           count(events.kind) filter (where events.kind = 'done')::int as done,
           count(events.kind) filter (where events.kind = 'settled')::int as settled
    from bounds, generate_series(bounds.start, date_trunc('minute', now()), interval '1 minute') as m(minute)
    left join events on events.minute = m.minute
    group by m.minute order by m.minute
  `.execute(db)).rows;
  const lastHour: MinuteActivity[] = minutes.map((m) => ({ minute: iso(m.minute)!, copied: m.copied, done: m.done, settled: m.settled }));

  if (!since) {
    return { since: null, settled: 0, seconds: 0, overallPerSecond: 0, currentPerSecond: 0, etaSeconds: remaining === 0 ? 0 : null, lastHour };
  }
  const counts = (await sql<{ settled: number; recent: number; last_settled: Date | null }>`
    select count(*) filter (where ${settledAt} >= ${since})::int as settled,
           count(*) filter (where ${settledAt} >= now() - make_interval(secs => ${CURRENT_WINDOW_SECONDS}))::int as recent,
           max(${settledAt}) as last_settled
    from ${ledger}
    where not ${stateIn(UNSETTLED_STATES)}
  `.execute(db)).rows[0]!;
  // While leases are held the run is going on, so the clock still runs;
  // afterwards it stops at the last settle, so a report read a day later
  // does not dilute the rate.
  const end = active || !counts.last_settled ? now : new Date(Math.max(counts.last_settled.getTime(), since.getTime()));
  const seconds = Math.max((end.getTime() - since.getTime()) / 1000, 0);
  const windowSeconds = Math.min(CURRENT_WINDOW_SECONDS, Math.max((now.getTime() - since.getTime()) / 1000, 0));
  const current = windowSeconds > 0 ? counts.recent / windowSeconds : 0;
  return {
    since: iso(since),
    settled: counts.settled,
    seconds: round(seconds, 1),
    overallPerSecond: seconds > 0 ? round(counts.settled / seconds) : 0,
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
  const row = (await sql<{
    source_bucket: string;
    source_prefix: string;
    target_bucket: string;
    target_prefix: string;
    table_name: string;
    id_column: string;
    path_column: string;
  }>`select * from ${sql.id(schema, 'ledger_config')}`.execute(db)).rows[0];
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
  const rows = (await sql<{
    id: number;
    command: string;
    status: string;
    started_at: Date;
    finished_at: Date | null;
    exit_code: number | null;
    host: string | null;
    pid: number | null;
    config: Record<string, unknown>;
    counts: Record<string, unknown>;
  }>`
    select id, command, status, started_at, finished_at, exit_code, host, pid, config, counts
    from ${sql.id(schema, 'runs')} order by id
  `.execute(db)).rows;
  const here = os.hostname();
  return rows.map((r) => ({
    id: r.id,
    command: r.command,
    status: r.status,
    startedAt: iso(r.started_at)!,
    finishedAt: iso(r.finished_at),
    seconds: r.finished_at ? round((r.finished_at.getTime() - r.started_at.getTime()) / 1000, 1) : null,
    exitCode: r.exit_code,
    host: r.host,
    pid: r.pid,
    processAlive: r.status === 'running' && r.host === here && r.pid != null ? isAlive(r.pid) : null,
    config: r.config,
    counts: r.counts,
  }));
}

/** Whether a process with this pid exists here (pids are reused, so a hint). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
