/**
 * Reading and seeding `ledger_counts` (migration 0009-ledger-counts): the
 * per-state, per-attempt, per-error, per-minute and per-lease-owner counts
 * the ledger's statement triggers keep, summed over their shards. Reads
 * here cost O(counters), never O(ledger).
 */
import { sql, type Kysely, type RawBuilder } from 'kysely';
import { quoteIdent } from '../config/identifiers.js';
import { UsageError } from '../errors.js';

const counts = (schema: string) => sql.id(schema, 'ledger_counts');

/** Keys per state (states with no key left out). */
export async function readStateCounts(db: Kysely<any>, schema: string): Promise<Record<string, number>> {
  const result = await sql<{ state: string; n: string }>`
    select label as state, sum(n)::text as n from ${counts(schema)} where kind = 'state' group by label having sum(n) <> 0
  `.execute(db);
  return Object.fromEntries(result.rows.map((r) => [r.state, Number(r.n)]));
}

/** Keys that reached a terminal state, all told. */
export const settledTotal = (schema: string) =>
  sql<number>`(select coalesce(sum(n), 0)::bigint from ${counts(schema)} where kind = 'settled')`;

/**
 * Sets `ledger_counts` for a ledger just bulk-loaded with the counting
 * trigger disabled: every row is new, never
 * claimed, and either pending or refused (failed). One scan of the refused
 * rows (rare), the rest from `added`. Returns the refused count.
 */
export async function seedBulkLoadCounts(
  run: <R>(query: RawBuilder<R>) => Promise<{ rows: R[] }>,
  schema: string,
  added: number,
): Promise<number> {
  const ledger = sql.id(schema, 'migration_ledger');
  await run(sql`delete from ${counts(schema)}`);
  const refused = await run(sql<{ n: number }>`
    with failed as materialized (
      select last_error, coalesce(done_at, updated_at) as at from ${ledger} where state = 'failed'
    ),
    added as (
      insert into ${counts(schema)} (kind, label, state, shard, n)
      select kind, label, st, 0, count(*) from (
        select 'state' as kind, 'failed' as label, '' as st from failed
        union all select 'error', regexp_replace(last_error, '"[^"]*"', '"…"', 'g'), 'failed' from failed where last_error is not null
        union all select 'settled', extract(epoch from date_trunc('minute', at))::bigint::text, '' from failed
      ) as x group by kind, label, st
    )
    select count(*)::int as n from failed
  `);
  const n = refused.rows[0]?.n ?? 0;
  await run(sql`
    insert into ${counts(schema)} (kind, label, state, shard, n, until)
    values ('state', 'pending', '', 0, ${added - n}, null), ('attempts', '0', '', 0, ${added}, null),
           ('activity', '', '', 0, ${added}, now())
  `);
  await run(sql`delete from ${counts(schema)} where n = 0 and until is null`);
  return n;
}

/**
 * Refuses, in one line, a ledger made by a version without `ledger_counts`
 * (the commands that only read do not migrate): `bucket-migrate migrate`
 * adds it, with one scan of the ledger for the initial counts.
 */
export async function requireLedgerCounts(db: Kysely<any>, schema: string): Promise<void> {
  const found = await sql<{ ok: boolean }>`select to_regclass(${`${quoteIdent(schema)}.ledger_counts`}) is not null as ok`.execute(db);
  if (!found.rows[0]?.ok) {
    throw new UsageError(`the ledger in schema ${schema} predates its counters table: run bucket-migrate migrate (or plan), then this command again`);
  }
}
