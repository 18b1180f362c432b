import { sql, type Kysely, type Migration } from 'kysely';

/**
 * The claimable index keyed by `(state, id)` instead of `(id)`.
 *
 * A claim asks for certain live states: `--keep-source` claims `pending` and
 * `copied` while every key it moved waits, parked, in `db_updated`. With the
 * index on `(id)` alone, such a claim walked the index from its start past
 * every parked row, filtering them out one by one: O(parked) per claim
 * (466 ms at 1M keys with 900k parked). Keyed by state first, a claim seeks
 * straight to each state it wants (`claimBatch` runs one ordered index scan
 * per state) and reads O(batch) entries; `hasLiveRows` likewise.
 *
 * Costs: each entry carries the state (a short text) besides the id, about
 * 8 more bytes per live row, and nothing more: `state` was already in the
 * index (its predicate), so state changes were not HOT before either, and
 * lease changes (which touch neither column) stay HOT. The predicate is
 * copied from the index this replaces, so live states other migrations
 * added are kept. Built with a plain CREATE INDEX (locks out writes while it
 * builds: run migrations before starting workers, as `plan` does).
 */
export function claimByStateMigration(schema: string): Migration {
  const ledger = sql.id(schema, 'migration_ledger');
  const predicate = async (db: Kysely<unknown>, index: string): Promise<string> => {
    const result = await sql<{ pred: string | null }>`
      select pg_get_expr(i.indpred, i.indrelid) as pred
      from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = ${schema} and c.relname = ${index}
    `.execute(db);
    const pred = result.rows[0]?.pred;
    if (!pred) throw new Error(`index ${schema}.${index} not found or not partial: run the earlier migrations first`);
    return pred;
  };
  const rebuild = async (db: Kysely<unknown>, columns: string) => {
    const pred = await predicate(db, 'migration_ledger_claimable');
    // The predicate comes from the catalog (pg_get_expr of our own index), not from input.
    await sql`create index migration_ledger_claimable_next on ${ledger} (${sql.raw(columns)}) where ${sql.raw(pred)}`.execute(db);
    await sql`drop index ${sql.id(schema, 'migration_ledger_claimable')}`.execute(db);
    await sql`alter index ${sql.id(schema, 'migration_ledger_claimable_next')} rename to migration_ledger_claimable`.execute(db);
  };
  return {
    async up(db: Kysely<unknown>) {
      await rebuild(db, 'state, id');
    },
    async down(db: Kysely<unknown>) {
      await rebuild(db, 'id');
    },
  };
}
