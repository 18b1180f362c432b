import { readlinkSync } from 'node:fs';
import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import { regclassName } from '../config/identifiers.js';
import { UsageError } from '../errors.js';
import { out } from '../util/output.js';

/**
 * A running run whose heartbeat (`runs.heartbeat_at`, written every few
 * seconds by the running process) is older than this is taken for dead or
 * frozen: it no longer keeps `execute` and `revert` apart.
 */
export const RUN_HEARTBEAT_STALE_SECONDS = 60;

/** How often a running process writes its heartbeat. */
export const RUN_HEARTBEAT_SECONDS = 5;

/** Commands that must not run on one ledger at the same time as each other. */
const EXCLUSIVE: Record<string, string[]> = { execute: ['revert'], revert: ['execute'] };

/**
 * This process's pid namespace (Linux), recorded with the pid so that a
 * container sharing the host name but not the pids is never judged by our
 * pid table. Null elsewhere.
 */
const PID_NAMESPACE: string | null = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return null;
  }
})();

/** A run row as the liveness checks see it. */
interface RunLiveness {
  id: number;
  command: string;
  host: string | null;
  pid: number | null;
  pid_namespace: string | null;
  process_id: string | null;
  started_at: Date;
  heartbeat_age: number | null;
}

/**
 * Whether the process of a run is known to be gone: it ran on this host, in
 * this pid namespace, and no process has its pid (`kill(pid, 0)` says
 * ESRCH). A process of another user (EPERM) or a reused pid counts as alive:
 * the answer errs on the side of waiting.
 */
export function runProcessGone(run: { host: string | null; pid: number | null; pid_namespace: string | null }): boolean {
  if (run.host !== os.hostname() || run.pid == null || run.pid_namespace !== PID_NAMESPACE) return false;
  if (run.pid === process.pid) return false;
  try {
    process.kill(run.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * The runs table: one row per command run, with its configuration (already
 * redacted by `describeConfig`) and its counts, for audits.
 *
 * `execute` and `revert` exclude each other on one ledger: before its row is
 * inserted, a run of one looks for a live run of the other, in the same
 * short transaction, under an advisory lock on the runs table (so two of
 * them starting at once cannot both miss each other). A run counts as live
 * while its status is `running`, its heartbeat is fresher than
 * {@link RUN_HEARTBEAT_STALE_SECONDS} and its process is not known to be
 * gone (see {@link runProcessGone}). A live one refuses the new run with a
 * one-line usage error naming it (exit 2). Runs of the same command never
 * exclude each other. `processId` (the prefix of the run's lease owner ids)
 * ties the run's leases to it (see `releaseDeadLeases`).
 */
export async function startRun(
  db: Kysely<any>,
  schema: string,
  command: string,
  config: Record<string, unknown>,
  processId?: string,
): Promise<number> {
  const runs = sql.id(schema, 'runs');
  return db.transaction().execute(async (trx) => {
    const others = EXCLUSIVE[command] ?? [];
    if (others.length > 0) {
      await sql`select pg_advisory_xact_lock(${regclassName({ schema, name: 'runs' })}::regclass::oid::bigint)`.execute(trx);
      const running = (await sql<RunLiveness>`
        select id, command, host, pid, pid_namespace, process_id, started_at,
               extract(epoch from now() - coalesce(heartbeat_at, started_at))::float8 as heartbeat_age
        from ${runs}
        where status = 'running' and command = any(${others}::text[])
        order by id
      `.execute(trx)).rows;
      const live = running.find((r) => (r.heartbeat_age ?? Infinity) < RUN_HEARTBEAT_STALE_SECONDS && !runProcessGone(r));
      if (live) {
        throw new UsageError(
          `${command} refused: ${live.command} run ${live.id} (host ${live.host ?? '?'}, pid ${live.pid ?? '?'}, started ${live.started_at.toISOString()}) ` +
            `is still running on this ledger; wait for it to end or stop it (a run whose process is gone, or whose heartbeat is older than ${RUN_HEARTBEAT_STALE_SECONDS} s, does not count)`,
        );
      }
    }
    const result = await sql<{ id: number }>`
      insert into ${runs} (command, host, pid, pid_namespace, process_id, heartbeat_at, config)
      values (${command}, ${os.hostname()}, ${process.pid}, ${PID_NAMESPACE}, ${processId ?? null}, now(), ${JSON.stringify(config)}::jsonb)
      returning id
    `.execute(trx);
    return result.rows[0]!.id;
  });
}

/**
 * Writes the run's heartbeat (and, if given, its counts) every
 * {@link RUN_HEARTBEAT_SECONDS}; errors are ignored (the next beat retries).
 * `execute` beats through its progress exchange instead; this is for runs
 * without one (`revert`).
 */
export function startHeartbeat(db: Kysely<any>, schema: string, runId: number, counts?: () => Record<string, unknown>): { stop(): void } {
  const timer = setInterval(() => {
    void sql`
      update ${sql.id(schema, 'runs')}
      set heartbeat_at = now()${counts ? sql`, counts = counts || ${JSON.stringify(counts())}::jsonb` : sql``}
      where id = ${runId}
    `
      .execute(db)
      .catch(() => undefined);
  }, RUN_HEARTBEAT_SECONDS * 1000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * Runs still marked `running` whose process is gone from this host (killed,
 * crashed): their leases can be released at once (`releaseDeadLeases`)
 * rather than waited out. Reads a few runs rows, whatever the ledger's size.
 */
export async function findGoneRuns(db: Kysely<any>, schema: string): Promise<Array<{ id: number; processId: string }>> {
  const rows = (await sql<RunLiveness>`
    select id, command, host, pid, pid_namespace, process_id, started_at, null::float8 as heartbeat_age
    from ${sql.id(schema, 'runs')}
    where status = 'running' and host = ${os.hostname()} and process_id is not null
  `.execute(db)).rows;
  return rows.filter((r) => runProcessGone(r)).map((r) => ({ id: r.id, processId: r.process_id! }));
}

/** Records how a run ended. */
export async function finishRun(
  db: Kysely<any>,
  schema: string,
  runId: number,
  status: 'succeeded' | 'failed' | 'interrupted',
  exitCode: number,
  counts: Record<string, unknown>,
): Promise<void> {
  await sql`
    update ${sql.id(schema, 'runs')}
    set finished_at = now(), status = ${status}, exit_code = ${exitCode}, counts = counts || ${JSON.stringify(counts)}::jsonb
    where id = ${runId}
  `.execute(db);
}

/** Ledger rows per state, for summaries. */
export async function countStates(db: Kysely<any>, schema: string): Promise<Record<string, number>> {
  const result = await sql<{ state: string; n: number }>`
    select state, count(*)::int as n from ${sql.id(schema, 'migration_ledger')} group by state
  `.execute(db);
  return Object.fromEntries(result.rows.map((r) => [r.state, r.n]));
}

/** How a run ended, as recorded in `runs` and returned as the exit code. */
export interface RunOutcome {
  status: 'succeeded' | 'failed' | 'interrupted';
  exitCode: number;
}

/**
 * The outcome of an `execute` or `revert` run, printing its last line: a
 * fatal error stops it (1), a signal interrupts it (130 for SIGINT, 143 for
 * SIGTERM; run the same command again to resume), keys that did not make it
 * fail it (1, with `failedHint` printed).
 */
export function runOutcome(
  command: 'execute' | 'revert',
  ended: { fatal?: string; signal?: NodeJS.Signals; keysFailed: boolean; failedHint?: string },
): RunOutcome {
  if (ended.fatal) {
    out.error(`stopped: ${ended.fatal}`);
    return { status: 'failed', exitCode: 1 };
  }
  if (ended.signal) {
    out.info(`interrupted: run the same ${command} command again to resume where this one stopped`);
    return { status: 'interrupted', exitCode: ended.signal === 'SIGINT' ? 130 : 143 };
  }
  if (ended.keysFailed) {
    if (ended.failedHint) out.info(ended.failedHint);
    return { status: 'failed', exitCode: 1 };
  }
  return { status: 'succeeded', exitCode: 0 };
}
