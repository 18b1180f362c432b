/**
 * Ledger transitions of the staged cutover (`execute --keep-source`, then
 * `execute --delete-only`). Each is one statement guarded by
 * `locked_by = me`, like those in state-machine.ts.
 */
import { sql } from 'kysely';
import type { LedgerContext } from './state-machine.js';

const ledger = (ctx: Pick<LedgerContext, 'schema'>) => sql.id(ctx.schema, 'migration_ledger');

/** The `last_error` prefix of a key whose source delete was refused. */
export const DELETE_REFUSED = 'delete refused';

/**
 * Parks committed keys in `db_updated` (`--keep-source`): the lease is
 * released so that a `--delete-only` run can claim them at once instead of
 * waiting for it to expire.
 */
export async function parkDbUpdated(ctx: LedgerContext, ids: number[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)}
    set locked_by = null, locked_until = null, updated_at = now()
    where id = any(${ids}::bigint[]) and locked_by = ${ctx.me} and state = 'db_updated'
    returning id
  `.execute(ctx.db);
  return result.rows.map((r) => r.id);
}

/**
 * db_updated → failed, at once and without retries: the target is gone or
 * not the object that was copied, so deleting the source would leave the
 * rows naming nothing (or the wrong bytes). The source is kept; the reason
 * is in `last_error` (prefixed {@link DELETE_REFUSED}) and `failed_state` is
 * `db_updated`, so `execute --retry-failed` re-checks it once the target is
 * repaired, and `revert` can move the rows back to the intact source.
 */
export async function refuseDelete(ctx: LedgerContext, rows: Array<{ id: number; reason: string }>): Promise<number[]> {
  if (rows.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = 'failed', failed_state = 'db_updated', failures = l.failures + 1,
        last_error = ${DELETE_REFUSED} || ': ' || v.reason,
        locked_by = null, locked_until = null, updated_at = now()
    from unnest(${rows.map((r) => r.id)}::bigint[], ${rows.map((r) => r.reason)}::text[]) as v(id, reason)
    where l.id = v.id and l.locked_by = ${ctx.me} and l.state = 'db_updated'
    returning l.id
  `.execute(ctx.db);
  return result.rows.map((r) => r.id);
}

/** Keys whose source delete was refused, for the end-of-run report. */
export async function listRefusedDeletes(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  limit = 100,
): Promise<{ total: number; rows: Array<{ src_key: string; dst_key: string; last_error: string }> }> {
  const rows = await sql<{ src_key: string; dst_key: string; last_error: string; total: string }>`
    select src_key, dst_key, last_error, count(*) over () as total
    from ${ledger(ctx)}
    where state = 'failed' and last_error like ${`${DELETE_REFUSED}:%`}
    order by id
    limit ${limit}
  `.execute(ctx.db);
  return { total: Number(rows.rows[0]?.total ?? 0), rows: rows.rows };
}
