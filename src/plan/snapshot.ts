import { sql, type Kysely, type RawBuilder } from 'kysely';
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

type SnapshotContext = Pick<LedgerContext, 'db' | 'schema' | 'table' | 'idColumn' | 'pathColumn'>;

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
 *
 * Keys are inserted in key order, so ledger ids follow the keys: a claim of
 * consecutive ids is a contiguous range of keys.
 *
 * The first plan into an empty ledger is a bulk load (see `bulkLoad`); later
 * plans merge with an upsert.
 */
export async function snapshotTable(
  ctx: SnapshotContext,
  sourcePrefix: string,
  targetPrefix: string,
  runId: number,
): Promise<SnapshotResult> {
  const loaded = await bulkLoad(ctx, sourcePrefix, targetPrefix, runId);
  if (loaded) return loaded;
  const ledger = sql.id(ctx.schema, 'migration_ledger');
  // Only keys that are new or gained ids reach the upsert: a re-plan of an
  // unchanged million-key table is one hash join, not a million speculative
  // insertions.
  const result = await sql<SnapshotResult>`
    with ${judgedRefs(ctx, sourcePrefix, targetPrefix)},
    changed as (
      select judged.* from judged left join ${ledger} as known on known.src_key = judged.src_key
      where known.id is null or not (judged.row_ids <@ known.row_ids)
    ),
    upserted as (
      insert into ${ledger} as l (src_key, dst_key, row_ids, planned_run_id, state, last_error, failed_state)
      select src_key, dst_key, row_ids, ${runId},
             case when refusal is null then 'pending' else 'failed' end, refusal,
             case when refusal is null then null else 'pending' end
      from changed
      order by src_key
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

/**
 * The CTEs `refs` (one row per distinct key under the prefix, with the ids
 * referencing it, in id order) and `judged` (plus the destination key and
 * the reason S3 cannot take it, if any), sorted by key.
 *
 * Keys are sorted and grouped in the "C" collation: byte order, which is
 * S3's listing order for UTF-8 keys, and several times cheaper to sort than
 * a locale's order. Grouping is unaffected: keys are equal only if their
 * bytes are. The ids are aggregated from input sorted by (key, id) rather
 * than with `array_agg(... order by id)`, which in Postgres 15 and older
 * starts a sort per group: a million sorts of one row for a million keys.
 */
function judgedRefs(ctx: SnapshotContext, sourcePrefix: string, targetPrefix: string): RawBuilder<unknown> {
  const table = ctx.table.schema ? sql.id(ctx.table.schema, ctx.table.name) : sql.id(ctx.table.name);
  const id = sql.id(ctx.idColumn);
  const path = sql.id(ctx.pathColumn);
  const growth = Buffer.byteLength(targetPrefix) - Buffer.byteLength(sourcePrefix);
  return sql`
    refs as (
      select src_key, array_agg(row_id) as row_ids
      from (
        select t.${path}::text collate "C" as src_key, t.${id}::text as row_id
        from ${table} as t
        where starts_with(t.${path}, ${sourcePrefix})
        order by 1, t.${id}
      ) as sorted
      group by src_key
    ),
    judged as (
      select src_key, ${targetPrefix} || substr(src_key, ${sourcePrefix.length} + 1) as dst_key, row_ids,
             case when octet_length(src_key) + ${growth}::int > 1024 then 'destination key is longer than 1024 bytes'
                  when src_key ~ '[\\x01-\\x1f\\x7f]' then 'key contains control characters, which S3 listings cannot carry'
             end as refusal
      from refs
    )
  `;
}

/**
 * The first plan of a ledger: when the ledger is empty, its rows are loaded
 * with a plain sorted INSERT and its secondary indexes are dropped before
 * and rebuilt after, in one transaction. Building an index once from sorted
 * input is several times cheaper than inserting a million entries one at a
 * time, and a plain INSERT skips the upsert's speculative insertion per row.
 * The table is locked for the transaction, so a concurrent plan waits and
 * then takes the upsert path. The primary key is dropped and added back the
 * same way when nothing depends on it. Returns undefined, having changed nothing, when the ledger is not
 * empty or this role does not own it.
 */
async function bulkLoad(
  ctx: SnapshotContext,
  sourcePrefix: string,
  targetPrefix: string,
  runId: number,
): Promise<SnapshotResult | undefined> {
  const ledger = sql.id(ctx.schema, 'migration_ledger');
  // Dropping an index takes ownership of the table: a role that only has
  // rights on a ledger someone else created loads it the incremental way.
  const quick = await sql<{ empty: boolean; owner: boolean }>`
    select not exists (select 1 from ${ledger}) as empty,
           pg_has_role(current_user, (select relowner from pg_class where oid = ${`${quoteIdent(ctx.schema)}.migration_ledger`}::regclass), 'USAGE') as owner
  `.execute(ctx.db);
  if (!quick.rows[0]?.empty || !quick.rows[0]?.owner) return undefined;
  return (ctx.db as Kysely<any>).transaction().execute(async (trx) => {
    await sql`lock table ${ledger} in access exclusive mode`.execute(trx);
    const check = await sql<{ empty: boolean }>`select not exists (select 1 from ${ledger}) as empty`.execute(trx);
    if (!check.rows[0]?.empty) return undefined;
    // Memory for the sorts of this transaction only.
    await sql`set local work_mem = '256MB'`.execute(trx);
    await sql`set local maintenance_work_mem = '256MB'`.execute(trx);
    const indexes = await sql<{ name: string; definition: string }>`
      select c.relname as name, pg_get_indexdef(i.indexrelid) as definition
      from pg_index i join pg_class c on c.oid = i.indexrelid
      where i.indrelid = ${`${quoteIdent(ctx.schema)}.migration_ledger`}::regclass
        and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)
      order by c.relname
    `.execute(trx);
    for (const index of indexes.rows) await sql`drop index ${sql.id(ctx.schema, index.name)}`.execute(trx);
    const primaryKey = await dropPrimaryKey(trx, ctx.schema);
    const inserted = await sql`
      with ${judgedRefs(ctx, sourcePrefix, targetPrefix)}
      insert into ${ledger} (src_key, dst_key, row_ids, planned_run_id, state, last_error, failed_state)
      select src_key, dst_key, row_ids, ${runId},
             case when refusal is null then 'pending' else 'failed' end, refusal,
             case when refusal is null then null else 'pending' end
      from judged
      order by src_key
    `.execute(trx);
    // Refused keys are rare; counting them afterwards is one scan, cheaper
    // than returning a million rows to count them.
    const refused = await sql<{ n: number }>`select count(*)::int as n from ${ledger} where state = 'failed'`.execute(trx);
    if (primaryKey) await sql`alter table ${ledger} add constraint ${sql.id(primaryKey.name)} ${sql.raw(primaryKey.definition)}`.execute(trx);
    // pg_get_indexdef gives back each index exactly: name, uniqueness, predicate.
    for (const index of indexes.rows) await sql.raw(index.definition).execute(trx);
    // Fresh statistics, so the first claims and commits are planned for a
    // table of this size rather than for an empty one.
    await sql`analyze ${ledger}`.execute(trx);
    return { added: Number(inserted.numAffectedRows ?? 0), extended: 0, refused: refused.rows[0]?.n ?? 0 };
  });
}

/**
 * Drops the ledger's primary key for the load, when nothing depends on it
 * (a foreign key, a view grouping by it): its index is rebuilt afterwards in
 * one sorted pass, like the others. Returns what to restore, or undefined
 * when the key stays (then the load maintains it row by row, as before).
 */
async function dropPrimaryKey(trx: Kysely<any>, schema: string): Promise<{ name: string; definition: string } | undefined> {
  const table = `${quoteIdent(schema)}.migration_ledger`;
  const found = await sql<{ name: string; definition: string }>`
    select conname as name, pg_get_constraintdef(oid) as definition
    from pg_constraint where conrelid = ${table}::regclass and contype = 'p'
  `.execute(trx);
  const key = found.rows[0];
  if (!key) return undefined;
  await sql`savepoint drop_primary_key`.execute(trx);
  try {
    await sql`alter table ${sql.id(schema, 'migration_ledger')} drop constraint ${sql.id(key.name)}`.execute(trx);
    await sql`release savepoint drop_primary_key`.execute(trx);
    return key;
  } catch {
    await sql`rollback to savepoint drop_primary_key`.execute(trx);
    return undefined;
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
