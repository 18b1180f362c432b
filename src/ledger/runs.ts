import os from 'node:os';
import { sql, type Kysely } from 'kysely';

/**
 * The runs table: one row per command run, with its configuration (already
 * redacted by `describeConfig`) and its counts, for audits.
 */
export async function startRun(db: Kysely<any>, schema: string, command: string, config: Record<string, unknown>): Promise<number> {
  const result = await sql<{ id: number }>`
    insert into ${sql.id(schema, 'runs')} (command, host, pid, config)
    values (${command}, ${os.hostname()}, ${process.pid}, ${JSON.stringify(config)}::jsonb)
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

/** Ledger rows per state, for summaries. */
export async function countStates(db: Kysely<any>, schema: string): Promise<Record<string, number>> {
  const result = await sql<{ state: string; n: number }>`
    select state, count(*)::int as n from ${sql.id(schema, 'migration_ledger')} group by state
  `.execute(db);
  return Object.fromEntries(result.rows.map((r) => [r.state, r.n]));
}
