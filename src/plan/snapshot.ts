import { pipeline } from 'node:stream/promises';
import { sql, type RawBuilder } from 'kysely';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { quoteIdent } from '../config/identifiers.js';
import { withDbRetry } from '../db/retry.js';
import { FatalError, oneLine } from '../errors.js';
import { seedBulkLoadCounts } from '../ledger/ledger-counts.js';
import { bulkLoadQuery, insertPlannedKeys, type LedgerContext, type PlannedKeys } from '../ledger/state-machine.js';
import { destinationKey, keyRefusal, type PathLimit, type RefusalRules } from './key-refusal.js';

/** What one snapshot added to the ledger. */
export type SnapshotResult = PlannedKeys;

type SnapshotContext = Pick<LedgerContext, 'db' | 'schema' | 'table' | 'idColumn' | 'pathColumn'> & {
  /** The database URL: the bulk load opens its own two connections. */
  url: string;
  /** The path column's length limit, if any: longer destinations are refused. */
  pathLimit?: PathLimit;
};

/**
 * Copies every table row under the source prefix into the ledger, one row per
 * distinct key. Postgres does the work: the upsert is one server-side
 * statement, and the bulk load streams COPY data from one connection to
 * another through a fixed-size buffer, never parsing a row here. Either way
 * it scales with Postgres, not with Node's heap.
 *
 * The destination key replaces only the leading prefix. Re-running adds new
 * keys and new referencing ids, and changes nothing else, except that a key
 * already finished (`done`, `superseded`) that a row names again is taken
 * back to `pending`, so that row is moved too (see `insertPlannedKeys`).
 *
 * Keys that cannot be moved are recorded as `failed` at once, with the
 * reason (see `keyRefusal`): destination keys over 1,024 bytes or longer
 * than the path column allows, and keys with control characters (S3's XML
 * listings cannot carry them faithfully).
 *
 * Keys are inserted in key order, so ledger ids follow the keys: a claim of
 * consecutive ids is a contiguous range of keys.
 *
 * The first plan into an empty ledger is a bulk load (see `bulkLoad`); later
 * plans merge with an upsert. `bulk` says which: after a bulk load the
 * ledger holds exactly the snapshot's keys, so its state counts are known
 * without a scan.
 */
export async function snapshotTable(
  ctx: SnapshotContext,
  sourcePrefix: string,
  targetPrefix: string,
  runId: number,
): Promise<{ snapshot: SnapshotResult; bulk: boolean }> {
  const loaded = await bulkLoad(ctx, sourcePrefix, targetPrefix, runId);
  if (loaded) return { snapshot: loaded, bulk: true };
  // The upsert locks ledger rows in key order while execute's commits and
  // the guard trigger's inserts lock them in theirs: Postgres may break the
  // cycle by aborting it (40P01). It is one statement, and running it again
  // is harmless (it only adds keys and ids), so it is retried.
  const snapshot = await withDbRetry(() => insertPlannedKeys(ctx, judgedRefs(ctx, sourcePrefix, targetPrefix), runId));
  return { snapshot, bulk: false };
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
 *
 * The refusal is a function of the key alone, so it is computed per table
 * row below the sort and carried through the grouping (constant within a
 * group; the sort compares it only between rows of one key). There it runs
 * in the scan, which Postgres can split between parallel workers, rather
 * than after the aggregate in the one process that also writes the
 * output: the control-character regex was a third of the bulk load
 * reader's CPU (0.68 of 2.2 s for 1M keys).
 */
function judgedRefs(
  ctx: SnapshotContext,
  sourcePrefix: string,
  targetPrefix: string,
  value: (v: string | number) => RawBuilder<unknown> = (v) => sql`${v}`,
): RawBuilder<unknown> {
  const table = ctx.table.schema ? sql.id(ctx.table.schema, ctx.table.name) : sql.id(ctx.table.name);
  const id = sql.id(ctx.idColumn);
  const path = sql.id(ctx.pathColumn);
  const rules: RefusalRules = { sourcePrefix, targetPrefix, pathLimit: ctx.pathLimit, value };
  return sql`
    refs as (
      select src_key, refusal, array_agg(row_id) as row_ids
      from (
        select t.${path}::text collate "C" as src_key, t.${id}::text as row_id,
               ${keyRefusal(sql`t.${path}::text`, rules)} as refusal
        from ${table} as t
        where starts_with(t.${path}, ${value(sourcePrefix)})
        order by 1, 3, t.${id}
      ) as sorted
      group by src_key, refusal
    ),
    judged as (
      select src_key, ${destinationKey(sql`src_key`, rules)} as dst_key, row_ids, refusal
      from refs
    )
  `;
}

/**
 * The first plan of a ledger: when the ledger is empty, it is loaded with
 * COPY, streamed from a second connection, and its indexes are dropped
 * before and rebuilt after, all in one transaction.
 *
 * Why COPY between two connections rather than one INSERT ... SELECT:
 * - COPY FROM inserts with heap_multi_insert, a page of rows at a time: far
 *   less WAL and locking per row than INSERT's row-at-a-time path (about 40%
 *   cheaper for a million keys).
 * - The reading backend (connection A: scan, sort, aggregate) and the
 *   writing one (connection B: the load, in the transaction) run on two
 *   cores at once, instead of one backend doing both in turn.
 * - The stream is piped with backpressure and no row is parsed here: rows
 *   pass through this process as opaque COPY text, a buffer at a time, so
 *   memory stays flat whatever the table's size. COPY's text format escapes
 *   every byte it could mistake (tabs, newlines, backslashes) and both ends
 *   use the same format, so keys round-trip exactly.
 *
 * Rows arrive sorted by key and take their ids from the identity in that
 * order, so ledger ids follow the keys, as with the upsert.
 *
 * When nothing references the ledger by foreign key, the (empty, locked)
 * ledger is truncated first, which allows COPY ... FREEZE: rows are written
 * frozen and all-visible, so the index builds and the first scans do not
 * rewrite every page to set hint bits. FREEZE's one caveat, rows visible at
 * once to snapshots older than the load, does not matter here: the ledger
 * was empty and is locked until commit. TRUNCATE would fail with a foreign
 * key pointing at the ledger; then the load is a plain COPY.
 *
 * Building an index once from sorted input is several times cheaper than
 * inserting a million entries one at a time. The primary key is dropped
 * and added back the same way when nothing depends on it. The table is
 * locked for the transaction, so a concurrent plan waits and then takes the
 * upsert path.
 *
 * Any failure, on either connection, rolls the transaction back and closes
 * both connections: the ledger is left empty, as it was, and the error is
 * one line. Returns undefined, having changed nothing, when the ledger is
 * not empty or this role does not own it (dropping an index, TRUNCATE and
 * FREEZE need ownership).
 */
async function bulkLoad(
  ctx: SnapshotContext,
  sourcePrefix: string,
  targetPrefix: string,
  runId: number,
): Promise<SnapshotResult | undefined> {
  const ledger = sql.id(ctx.schema, 'migration_ledger');
  const ledgerName = `${quoteIdent(ctx.schema)}.migration_ledger`;
  const quick = await sql<{ empty: boolean; owner: boolean }>`
    select not exists (select 1 from ${ledger}) as empty,
           pg_has_role(current_user, (select relowner from pg_class where oid = ${ledgerName}::regclass), 'USAGE') as owner
  `.execute(ctx.db);
  if (!quick.rows[0]?.empty || !quick.rows[0]?.owner) return undefined;

  const reader = new pg.Client({ connectionString: ctx.url, application_name: 'bucket-migrate plan (read)' });
  const writer = new pg.Client({ connectionString: ctx.url, application_name: 'bucket-migrate plan (load)' });
  // A connection dropped between two queries emits 'error' on its client;
  // the failure reaches the pending query anyway.
  reader.on('error', () => undefined);
  writer.on('error', () => undefined);
  // Statements are written with kysely's `sql` (identifiers through sql.id)
  // and run on the raw clients.
  const run = <R>(client: pg.Client, query: RawBuilder<R>) => {
    const compiled = query.compile(ctx.db);
    return client.query(compiled.sql, compiled.parameters as unknown[]) as unknown as Promise<pg.QueryResult<R & pg.QueryResultRow>>;
  };
  let began = false;
  try {
    await Promise.all([reader.connect(), writer.connect()]);
    // The reader starts scanning and sorting at once, while the writer
    // prepares the ledger; its output waits in the stream (paused at the
    // high-water mark) until the COPY FROM below takes it.
    await reader.query(`set work_mem = '256MB'`);
    // Until the first sorted row, the loading backend has nothing to do:
    // make a parallel scan and sort look as cheap as it is here, so the
    // scan, the refusal checks and the sort can use that idle core
    // (max_parallel_workers_per_gather still decides how many workers).
    await reader.query('set parallel_setup_cost = 0; set parallel_tuple_cost = 0');
    const source = reader.query(copyTo(copySelect(ctx, sourcePrefix, targetPrefix, runId)));

    await writer.query('begin');
    began = true;
    await run(writer, sql`lock table ${ledger} in access exclusive mode`);
    const check = await run(writer, sql<{ empty: boolean }>`select not exists (select 1 from ${ledger}) as empty`);
    if (!check.rows[0]?.empty) {
      await writer.query('rollback');
      began = false;
      return undefined;
    }
    // Memory for the sorts of the index builds in this transaction only.
    await writer.query(`set local maintenance_work_mem = '256MB'`);
    const indexes = await run(writer, sql<{ name: string; definition: string }>`
      select c.relname as name, pg_get_indexdef(i.indexrelid) as definition
      from pg_index i join pg_class c on c.oid = i.indexrelid
      where i.indrelid = ${ledgerName}::regclass
        and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)
      order by c.relname
    `);
    for (const index of indexes.rows) await run(writer, sql`drop index ${sql.id(ctx.schema, index.name)}`);
    const primaryKey = await dropPrimaryKey((query) => run(writer, query), ctx.schema);
    const freeze = await truncateForFreeze((query) => run(writer, query), ctx.schema);
    // The counting trigger stands aside for the load (disabled, so no
    // transition table of every row is even collected); its counts are
    // known (below). This transaction holds the table exclusively.
    await run(writer, sql`alter table ${ledger} disable trigger ledger_counts_insert`);
    const sink = writer.query(copyFrom(bulkLoadQuery(ctx, sql``, runId, freeze).sink.compile(ctx.db).sql));
    await pipeline(source, sink);
    const added = sink.rowCount ?? 0;
    // Refused keys are rare; counting them afterwards is one scan of a
    // frozen table, cheaper than counting them on the way through. The
    // same scan seeds ledger_counts.
    await run(writer, sql`alter table ${ledger} enable trigger ledger_counts_insert`);
    const refused = await seedBulkLoadCounts((query) => run(writer, query), ctx.schema, added);
    if (primaryKey) await run(writer, sql`alter table ${ledger} add constraint ${sql.id(primaryKey.name)} ${sql.raw(primaryKey.definition)}`);
    // pg_get_indexdef gives back each index exactly: name, uniqueness, predicate.
    for (const index of indexes.rows) await writer.query(index.definition);
    // Fresh statistics, so the first claims and commits are planned for a
    // table of this size rather than for an empty one.
    await run(writer, sql`analyze ${ledger}`);
    await writer.query('commit');
    began = false;
    return { added, extended: 0, refused };
  } catch (err) {
    // The reader may be blocked mid-COPY with nobody reading: closing its
    // socket is the only reliable stop, and the server then ends its query.
    reader.connection.stream.destroy();
    if (began) await withTimeout(writer.query('rollback'), 10_000).catch(() => undefined);
    throw new FatalError(`plan: loading the ledger failed, the ledger is left empty: ${oneLine(err)}`);
  } finally {
    // After a failure the reader's socket is already closed; after a
    // success both end politely, and are cut if the server does not answer.
    await Promise.all([
      withTimeout(reader.end(), 10_000).catch(() => reader.connection.stream.destroy()),
      withTimeout(writer.end(), 10_000).catch(() => writer.connection.stream.destroy()),
    ]);
  }
}

/**
 * The judged keys as COPY's source query. COPY takes no bind parameters,
 * so the values are inlined as literals, quoted by pg's escapeLiteral
 * (correct whatever standard_conforming_strings says).
 */
function copySelect(ctx: SnapshotContext, sourcePrefix: string, targetPrefix: string, runId: number): string {
  const query = bulkLoadQuery(ctx, judgedRefs(ctx, sourcePrefix, targetPrefix, literal), runId, false).source.compile(ctx.db);
  if (query.parameters.length > 0) throw new Error('COPY query has bind parameters');
  return query.sql;
}

/** A value inlined as an SQL literal (for COPY, which takes no parameters). */
function literal(value: string | number): RawBuilder<unknown> {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new Error(`bad integer ${value}`);
    return sql.raw(String(value));
  }
  return sql.raw(pg.escapeLiteral(value));
}

/**
 * Truncates the empty, locked ledger so COPY may FREEZE (allowed only into
 * a table created or truncated in the same transaction). Skipped when a
 * foreign key references the ledger (TRUNCATE would refuse); in a savepoint
 * so that any other refusal falls back to a plain COPY.
 */
async function truncateForFreeze(run: Runner, schema: string): Promise<boolean> {
  const referenced = await run(sql<{ found: boolean }>`
    select exists (select 1 from pg_constraint where confrelid = ${`${quoteIdent(schema)}.migration_ledger`}::regclass and contype = 'f') as found
  `);
  if (referenced.rows[0]?.found) return false;
  await run(sql`savepoint truncate_ledger`);
  try {
    await run(sql`truncate ${sql.id(schema, 'migration_ledger')}`);
    await run(sql`release savepoint truncate_ledger`);
    return true;
  } catch {
    await run(sql`rollback to savepoint truncate_ledger`);
    return false;
  }
}

type Runner = <R>(query: RawBuilder<R>) => Promise<{ rows: R[] }>;

/**
 * Drops the ledger's primary key for the load, when nothing depends on it
 * (a foreign key, a view grouping by it): its index is rebuilt afterwards in
 * one sorted pass, like the others. Returns what to restore, or undefined
 * when the key stays (then the load maintains it row by row, as before).
 */
async function dropPrimaryKey(run: Runner, schema: string): Promise<{ name: string; definition: string } | undefined> {
  const table = `${quoteIdent(schema)}.migration_ledger`;
  const found = await run(sql<{ name: string; definition: string }>`
    select conname as name, pg_get_constraintdef(oid) as definition
    from pg_constraint where conrelid = ${table}::regclass and contype = 'p'
  `);
  const key = found.rows[0];
  if (!key) return undefined;
  await run(sql`savepoint drop_primary_key`);
  try {
    await run(sql`alter table ${sql.id(schema, 'migration_ledger')} drop constraint ${sql.id(key.name)}`);
    await run(sql`release savepoint drop_primary_key`);
    return key;
  } catch {
    await run(sql`rollback to savepoint drop_primary_key`);
    return undefined;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Records (in `late_references`) every table row that names a ledger key in
 * a spelling other than the key itself: a leading '/', s3://bucket/key, an
 * http(s) URL naming the bucket (the ledger function `key_in`). Such rows
 * are never rewritten, and the delete's check (`findNamingRows`) finds them
 * by id and keeps their sources. One scan of the table, filtered on the
 * spellings' first characters. Returns the number of such rows.
 */
export async function recordSpelledReferences(
  ctx: Pick<LedgerContext, 'db' | 'schema' | 'table' | 'idColumn' | 'pathColumn'>,
  source: { bucket: string; prefix: string },
): Promise<number> {
  const table = ctx.table.schema ? sql.id(ctx.table.schema, ctx.table.name) : sql.id(ctx.table.name);
  const id = sql.id(ctx.idColumn);
  const path = sql.id(ctx.pathColumn);
  const result = await sql<{ n: number }>`
    with spelled as (
      select l.id as ledger_id, t.${id}::text as row_id
      from ${table} as t
      join ${sql.id(ctx.schema, 'migration_ledger')} as l
        on l.src_key = ${sql.id(ctx.schema, 'key_in')}(t.${path}::text, ${source.bucket}, ${source.prefix})
      where (starts_with(t.${path}, '/') or starts_with(t.${path}, 's3://') or starts_with(t.${path}, 'http'))
    ),
    added as (
      insert into ${sql.id(ctx.schema, 'late_references')} (ledger_id, row_id)
      select ledger_id, row_id from spelled
      on conflict do nothing
    )
    select count(*)::int as n from spelled
  `.execute(ctx.db);
  return result.rows[0]?.n ?? 0;
}
