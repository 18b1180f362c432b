import { sql, type Kysely, type Migration } from 'kysely';

/**
 * The `archived` state: a source in an archive storage class (GLACIER,
 * DEEP_ARCHIVE, an Intelligent-Tiering archive tier) cannot be copied until
 * it is restored, and S3 says so with 403 InvalidObjectState. That is about
 * the object, not the run, so it gets a terminal state of its own instead of
 * stopping the run (a 403 is otherwise fatal) or burning retries.
 *
 * Only the state check changes; Postgres validates the new constraint
 * against existing rows, all of which already satisfy it.
 */
export function archivedStateMigration(schema: string): Migration {
  const ledger = sql.id(schema, 'migration_ledger');
  const check = (states: string[]) => sql`
    alter table ${ledger}
      drop constraint migration_ledger_state_check,
      add constraint migration_ledger_state_check check (state in (${sql.join(states.map((s) => sql.lit(s)))}))
  `;
  const before = ['pending', 'copied', 'db_updated', 'done', 'failed', 'conflict', 'missing', 'superseded'];
  return {
    async up(db: Kysely<unknown>) {
      await check([...before, 'archived']).execute(db);
    },
    async down(db: Kysely<unknown>) {
      // Archived keys go back to pending: the state they were claimed in.
      await sql`update ${ledger} set state = 'pending' where state = 'archived'`.execute(db);
      await check(before).execute(db);
    },
  };
}
