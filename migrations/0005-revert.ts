import { sql, type Kysely, type Migration } from 'kysely';

const REVERT_STATES = ['reverting', 'reverted'];

/**
 * What `bucket-migrate revert` records: two states and three columns.
 *
 * - `reverting`: the rows were moved back to the source key, the target copy
 *   is still to be deleted (claimable by revert only);
 * - `reverted`: terminal, the key is back where it started;
 * - `rows_reverted`, `reverted_at`, and `revert_failures` (a failure budget
 *   of its own, so failures of the forward run do not count against it).
 *
 * The state check is rebuilt from the constraint as it stands, not from a
 * fixed list, so states that other migrations added (0002-0004 are written
 * concurrently) are kept whatever they are. The new columns have constant
 * defaults or none, so adding them does not rewrite the table.
 * The claimable partial index is unchanged: revert claims by its own index,
 * built when revert first runs, so a forward-only migration never pays for it.
 */
export function revertMigration(schema: string): Migration {
  const ledger = sql.id(schema, 'migration_ledger');
  const currentStates = async (db: Kysely<unknown>): Promise<string[]> => {
    const result = await sql<{ def: string }>`
      select pg_get_constraintdef(c.oid) as def
      from pg_constraint c join pg_class t on t.oid = c.conrelid join pg_namespace n on n.oid = t.relnamespace
      where n.nspname = ${schema} and t.relname = 'migration_ledger' and c.conname = 'migration_ledger_state_check'
    `.execute(db);
    const def = result.rows[0]?.def ?? '';
    return [...def.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]!);
  };
  const check = (states: string[]) => sql`
    alter table ${ledger}
      drop constraint migration_ledger_state_check,
      add constraint migration_ledger_state_check check (state in (${sql.join(states.map((s) => sql.lit(s)))}))
  `;
  return {
    async up(db: Kysely<unknown>) {
      const states = await currentStates(db);
      await check([...states.filter((s) => !REVERT_STATES.includes(s)), ...REVERT_STATES]).execute(db);
      await sql`
        alter table ${ledger}
          add column rows_reverted text[],
          add column reverted_at timestamptz,
          add column revert_failures integer not null default 0
      `.execute(db);
    },
    async down(db: Kysely<unknown>) {
      // Keys part-way back are where the forward run left them: their rows
      // name the source again, so `done` would be a lie; `failed` asks a human.
      await sql`update ${ledger} set state = 'failed', last_error = 'revert migration rolled back mid-revert' where state = 'reverting'`.execute(db);
      await sql`update ${ledger} set state = 'failed', last_error = 'reverted (revert migration rolled back)' where state = 'reverted'`.execute(db);
      await sql`drop index if exists ${sql.id(schema, 'migration_ledger_revertable')}`.execute(db);
      await sql`alter table ${ledger} drop column rows_reverted, drop column reverted_at, drop column revert_failures`.execute(db);
      const states = await currentStates(db);
      await check(states.filter((s) => !REVERT_STATES.includes(s))).execute(db);
    },
  };
}
