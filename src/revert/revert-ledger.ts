/**
 * The ledger transitions of `revert`. Like those of `execute` (see
 * state-machine.ts), each is one statement, and every one after the claim is
 * guarded by `locked_by = me`.
 *
 *   db_updated ──rows back──▶ reverted            (the source never left)
 *   done ──copy back──▶ (done) ──rows back──▶ reverting ──delete target──▶ reverted
 *   failed (a refused delete, failed_state db_updated) is treated as db_updated
 *
 * The order per key keeps every table row naming an existing object: the
 * source exists (or is copied back) before any row names it again, and the
 * target copy is deleted only after the commit that moved the rows off it.
 */
import { sql } from 'kysely';
import type { LedgerContext } from '../ledger/state-machine.js';

/** A key as revert sees it. */
export interface RevertRow {
  id: number;
  src_key: string;
  dst_key: string;
  state: 'db_updated' | 'done' | 'reverting' | 'failed';
  src_size: number | null;
  src_etag: string | null;
  src_storage_class: string | null;
  dst_etag: string | null;
}

const ledger = (ctx: Pick<LedgerContext, 'schema'>) => sql.id(ctx.schema, 'migration_ledger');

/** Rows revert may take: moved (or part-way back), and not given up on. */
const revertable = (maxFailures: number) => sql`
  (state in ('db_updated', 'done', 'reverting') or (state = 'failed' and failed_state = 'db_updated'))
  and revert_failures < ${maxFailures}`;

/**
 * Builds the index revert claims by, once: the forward claim's partial index
 * does not cover `done`, and a scan of the primary key would wade through
 * every key already reverted. Built here rather than in a migration so that
 * a migration that is never reverted does not maintain it.
 */
export async function ensureRevertIndex(ctx: Pick<LedgerContext, 'db' | 'schema'>): Promise<void> {
  await sql`
    create index if not exists migration_ledger_revertable on ${ledger(ctx)} (id)
    where state in ('db_updated', 'done', 'reverting', 'failed')
  `.execute(ctx.db);
}

/** Leases up to `limit` revertable keys to `ctx.me` (one statement, like `claimBatch`). */
export async function claimRevert(ctx: LedgerContext, limit: number, leaseSeconds: number, maxFailures: number): Promise<RevertRow[]> {
  const result = await sql<RevertRow>`
    with claimable as (
      select id from ${ledger(ctx)}
      where state in ('db_updated', 'done', 'reverting', 'failed') and ${revertable(maxFailures)}
        and (locked_until is null or locked_until < now())
        and (not_before is null or not_before <= now())
      order by id
      limit ${limit}
      for update skip locked
    )
    update ${ledger(ctx)} as l
    set locked_by = ${ctx.me},
        locked_until = now() + make_interval(secs => ${leaseSeconds}),
        attempts = l.attempts + 1,
        updated_at = now()
    from claimable
    where l.id = claimable.id
    returning l.id, l.src_key, l.dst_key, l.state, l.src_size, l.src_etag, l.src_storage_class, l.dst_etag
  `.execute(ctx.db);
  return result.rows;
}

/** Whether any key is still to revert (leased elsewhere, or backing off). */
export async function hasRevertable(ctx: Pick<LedgerContext, 'db' | 'schema'>, maxFailures: number): Promise<boolean> {
  const result = await sql<{ left: boolean }>`
    select exists (select 1 from ${ledger(ctx)}
                   where state in ('db_updated', 'done', 'reverting', 'failed') and ${revertable(maxFailures)}) as left
  `.execute(ctx.db);
  return result.rows[0]?.left === true;
}

/**
 * Moves the rows of each key back to its source key, together with the
 * ledger change, in one statement and so one transaction. Each row that
 * execute moved (`rows_updated`) is updated by primary key with a
 * compare-and-set on the target path: a row the application changed since
 * is left alone. A key whose target copy must go (`deleteTarget`: the source
 * had been deleted, so the target is a copy we made) becomes `reverting`
 * and keeps its lease; the others are `reverted`, their target copy left in
 * place (it is the object the source was copied to, never read again).
 */
export async function revertRows(
  ctx: LedgerContext,
  keys: Array<{ id: number; deleteTarget: boolean }>,
): Promise<Array<{ id: number; state: 'reverting' | 'reverted' }>> {
  if (keys.length === 0) return [];
  const t = ctx.table.schema ? sql.id(ctx.table.schema, ctx.table.name) : sql.id(ctx.table.name);
  const idCol = sql.id(ctx.idColumn);
  const pathCol = sql.id(ctx.pathColumn);
  const result = await sql<{ id: number; state: 'reverting' | 'reverted' }>`
    with batch as (
      select l.id, l.src_key, l.dst_key, coalesce(l.rows_updated, '{}') as rows_updated, v.del
      from ${ledger(ctx)} as l
      join unnest(${keys.map((k) => k.id)}::bigint[], ${keys.map((k) => k.deleteTarget)}::boolean[]) as v(id, del) on v.id = l.id
      where l.locked_by = ${ctx.me}
        and (l.state in ('db_updated', 'done') or (l.state = 'failed' and l.failed_state = 'db_updated'))
      for update of l
    ),
    refs as (
      select batch.id as ledger_id, batch.src_key, batch.dst_key, r.row_id
      from batch cross join unnest(batch.rows_updated) as r(row_id)
    ),
    moved as (
      update ${t} as t
      set ${pathCol} = refs.src_key
      from refs
      where t.${idCol} = refs.row_id::${sql.raw(ctx.idCast)} and t.${pathCol} = refs.dst_key
      returning refs.ledger_id, t.${idCol}::text as row_id
    ),
    moved_by_key as (
      select ledger_id, array_agg(row_id order by row_id) as row_ids from moved group by ledger_id
    )
    update ${ledger(ctx)} as l
    set state = case when batch.del then 'reverting' else 'reverted' end,
        rows_reverted = coalesce(moved_by_key.row_ids, '{}'),
        failed_state = null,
        last_error = null,
        reverted_at = case when batch.del then null else now() end,
        locked_by = case when batch.del then l.locked_by end,
        locked_until = case when batch.del then l.locked_until end,
        updated_at = now()
    from batch left join moved_by_key on moved_by_key.ledger_id = batch.id
    where l.id = batch.id
    returning l.id, l.state
  `.execute(ctx.db);
  return result.rows;
}

/** reverting → reverted: the target copy is deleted. The lease is released. */
export async function markReverted(ctx: LedgerContext, ids: number[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)}
    set state = 'reverted', reverted_at = now(), updated_at = now(), locked_by = null, locked_until = null, last_error = null
    where id = any(${ids}::bigint[]) and locked_by = ${ctx.me} and state = 'reverting'
    returning id
  `.execute(ctx.db);
  return result.rows.map((r) => r.id);
}

/**
 * Records failed revert steps on revert's own budget. A key backs off, or,
 * after `maxFailures` (1: at once, for refusals), becomes `failed`
 * remembering its state, and revert stops claiming it. The lease is released.
 */
export async function recordRevertFailures(
  ctx: LedgerContext,
  failures: Array<{ id: number; error: string }>,
  maxFailures: number,
  backoffSeconds: number,
): Promise<Array<{ id: number; state: string }>> {
  if (failures.length === 0) return [];
  const result = await sql<{ id: number; state: string }>`
    update ${ledger(ctx)} as l
    set revert_failures = case when l.revert_failures + 1 >= ${maxFailures} then greatest(${maxFailures}, l.revert_failures + 1)
                               else l.revert_failures + 1 end,
        last_error = 'revert: ' || v.error,
        state = case when l.revert_failures + 1 >= ${maxFailures} then 'failed' else l.state end,
        failed_state = case when l.revert_failures + 1 >= ${maxFailures} and l.state <> 'failed' then l.state else l.failed_state end,
        not_before = now() + make_interval(secs => least(300, ${backoffSeconds} * power(2, l.revert_failures))),
        locked_by = null,
        locked_until = null,
        updated_at = now()
    from unnest(${failures.map((f) => f.id)}::bigint[], ${failures.map((f) => f.error)}::text[]) as v(id, error)
    where l.id = v.id and l.locked_by = ${ctx.me}
    returning l.id, l.state
  `.execute(ctx.db);
  return result.rows;
}

/** Gives keys back unchanged (a clean stop). */
export async function releaseRevertLeases(ctx: LedgerContext, ids: number[]): Promise<void> {
  if (ids.length === 0) return;
  await sql`
    update ${ledger(ctx)} set locked_by = null, locked_until = null, updated_at = now()
    where id = any(${ids}::bigint[]) and locked_by = ${ctx.me}
  `.execute(ctx.db);
}

/** `revert --retry-failed`: keys revert gave up on get a fresh budget, back in the state they failed in. */
export async function requeueRevertFailed(ctx: Pick<LedgerContext, 'db' | 'schema'>): Promise<number> {
  const result = await sql`
    update ${ledger(ctx)}
    set state = case when state = 'failed' then coalesce(failed_state, state) else state end,
        failed_state = case when state = 'failed' and failed_state = 'db_updated' then failed_state end,
        revert_failures = 0, not_before = null, updated_at = now()
    where revert_failures > 0
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

/** Keys revert gave up on, for the end-of-run report. */
export async function listRevertFailed(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  maxFailures: number,
  limit = 100,
): Promise<{ total: number; rows: Array<{ src_key: string; dst_key: string; last_error: string | null }> }> {
  const rows = await sql<{ src_key: string; dst_key: string; last_error: string | null; total: string }>`
    select src_key, dst_key, last_error, count(*) over () as total
    from ${ledger(ctx)}
    where state = 'failed' and revert_failures >= ${maxFailures}
    order by id
    limit ${limit}
  `.execute(ctx.db);
  return { total: Number(rows.rows[0]?.total ?? 0), rows: rows.rows };
}
