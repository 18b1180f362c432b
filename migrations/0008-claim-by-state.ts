import { sql, type Kysely, type Migration } from 'kysely';

/**
 * One small claimable index per live state, `(id) where state = '<state>'`,
 * instead of one `(id) where state in (<live states>)`.
 *
 * A claim asks for certain live states: `--keep-source` claims `pending` and
 * `copied` while every key it moved waits, parked, in `db_updated`. With
 * one index over all live states, such a claim walked the index from its
 * start past every parked row, filtering them out one by one: O(parked) per
 * claim (466 ms at 1M keys with 900k parked). With an index per state, a
 * claim reads each state it wants from that state's index in id order
 * (src/ledger/claim-scan.ts): O(batch). Each index holds exactly its
 * state's rows, so it is always smaller than the primary key and the
 * planner picks it even when its statistics are stale (a `(state, id)`
 * index lost to an ordered primary-key scan on a fresh ledger).
 *
 * Costs: the same entries as before, split over the indexes (a key is in
 * one of them while live, in none once settled); a state change moves the
 * key's entry from one to another, as it rewrote it in the single index
 * before. `state` was already indexed (the old predicate), so nothing that
 * was a HOT update stops being one. The live states are read from the
 * predicate of the index this replaces, so states other migrations added
 * get their index too. Plain CREATE INDEX (run migrations before workers
 * start, as `plan` and `execute` do).
 */
export function claimByStateMigration(schema: string): Migration {
  const ledger = sql.id(schema, 'migration_ledger');
  const liveStates = async (db: Kysely<unknown>): Promise<string[]> => {
    const result = await sql<{ pred: string | null }>`
      select pg_get_expr(i.indpred, i.indrelid) as pred
      from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = ${schema} and c.relname = 'migration_ledger_claimable'
    `.execute(db);
    const states = [...(result.rows[0]?.pred ?? '').matchAll(/'([a-z_]+)'/g)].map((m) => m[1]!);
    if (states.length === 0) throw new Error(`index ${schema}.migration_ledger_claimable not found: run the earlier migrations first`);
    return states;
  };
  return {
    async up(db: Kysely<unknown>) {
      for (const state of await liveStates(db)) {
        await sql`create index ${sql.id(`migration_ledger_live_${state}`)} on ${ledger} (id) where state = ${sql.lit(state)}`.execute(db);
      }
      await sql`drop index ${sql.id(schema, 'migration_ledger_claimable')}`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      const indexes = await sql<{ name: string }>`
        select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = ${schema} and c.relkind = 'i' and c.relname like 'migration\\_ledger\\_live\\_%'
      `.execute(db);
      const states = indexes.rows.map((r) => r.name.slice('migration_ledger_live_'.length));
      await sql`create index migration_ledger_claimable on ${ledger} (id) where state in (${sql.join(states.map((s) => sql.lit(s)))})`.execute(db);
      for (const index of indexes.rows) await sql`drop index ${sql.id(schema, index.name)}`.execute(db);
    },
  };
}
