import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import { out } from '../util/output.js';
import { readStateCounts, settledTotal } from './ledger-counts.js';

/**
 * The runs table: one row per command run, with its configuration (already
 * redacted by `describeConfig`) and its counts, for audits.
 */
export async function startRun(db: Kysely<any>, schema: string, command: string, config: Record<string, unknown>): Promise<number> {
  // settledAtStart: keys already settled when the run began, so `report`
  // can tell what its execute runs settled without reading the ledger.
  const result = await sql<{ id: number }>`
    insert into ${sql.id(schema, 'runs')} (command, host, pid, config, counts)
    values (${command}, ${os.hostname()}, ${process.pid}, ${JSON.stringify(config)}::jsonb,
            jsonb_build_object('settledAtStart', ${settledTotal(schema)}))
    returning id
  `.execute(db);
  return result.rows[0]!.id;
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

/** Ledger rows per state, for summaries: from `ledger_counts`, no scan. */
export async function countStates(db: Kysely<any>, schema: string): Promise<Record<string, number>> {
  return readStateCounts(db, schema);
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
