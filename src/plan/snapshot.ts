import { sql } from 'kysely';
import type { LedgerContext } from '../ledger/state-machine.js';

/** What one snapshot added to the ledger. */
export interface SnapshotResult {
  /** New keys. */
  added: number;
  /** Existing keys that gained referencing ids. */
  extended: number;
  /** Of the new keys, those refused at once (control characters, too long). */
  refused: number;
}

/**
 * Copies every table row under the source prefix into the ledger, one row per
 * distinct key, in one server-side statement: no table row passes through
 * this process, so it scales with Postgres, not with Node's heap.
 *
 * The destination key replaces only the leading prefix. Re-running adds new
 * keys and new referencing ids, and changes nothing else, except that a key
 * already finished (`done`, `superseded`) that gains a new referencing row is
 * taken back to `copied`, so that row is moved onto the existing copy too.
 *
 * Keys S3 cannot take are recorded as `failed` at once, with the reason:
 * destination keys over 1,024 bytes, and keys with control characters (S3's
 * XML listings cannot carry them faithfully).
 */
export async function snapshotTable(
  ctx: Pick<LedgerContext, 'db' | 'schema' | 'table' | 'idColumn' | 'pathColumn'>,
  sourcePrefix: string,
  targetPrefix: string,
  runId: number,
): Promise<SnapshotResult> {
  const ledger = sql.id(ctx.schema, 'migration_ledger');
  const table = ctx.table.schema ? sql.id(ctx.table.schema, ctx.table.name) : sql.id(ctx.table.name);
  const id = sql.id(ctx.idColumn);
  const path = sql.id(ctx.pathColumn);
  const result = await sql<SnapshotResult>`
    with refs as (
      select t.${path}::text as src_key, array_agg(t.${id}::text order by t.${id}) as row_ids
      from ${table} as t
      where starts_with(t.${path}, ${sourcePrefix})
      group by t.${path}
    ),
    planned as (
      select src_key, ${targetPrefix} || substr(src_key, ${sourcePrefix.length} + 1) as dst_key, row_ids
      from refs
    ),
    judged as (
      select planned.*,
             case when octet_length(dst_key) > 1024 then 'destination key is longer than 1024 bytes'
                  when src_key ~ '[\\x01-\\x1f\\x7f]' then 'key contains control characters, which S3 listings cannot carry'
             end as refusal
      from planned
    ),
    upserted as (
      insert into ${ledger} as l (src_key, dst_key, row_ids, planned_run_id, state, last_error, failed_state)
      select src_key, dst_key, row_ids, ${runId},
             case when refusal is null then 'pending' else 'failed' end, refusal,
             case when refusal is null then null else 'pending' end
      from judged
      on conflict (src_key) do update
        set row_ids = array(select distinct x from unnest(l.row_ids || excluded.row_ids) as x order by x),
            state = case when l.state in ('done', 'superseded') then 'copied' else l.state end,
            updated_at = now()
        where not (excluded.row_ids <@ l.row_ids)
      returning (xmax = 0) as inserted, l.state
    )
    select count(*) filter (where inserted)::int as added,
           count(*) filter (where not inserted)::int as extended,
           count(*) filter (where inserted and state = 'failed')::int as refused
    from upserted
  `.execute(ctx.db);
  return result.rows[0]!;
}
