import { sql, type Kysely, type Migration } from 'kysely';

/**
 * The ledger: one row per source key, and the runs table.
 *
 * Design notes:
 * - `fillfactor = 70` leaves room in each page so that state changes are HOT
 *   updates (no index entry rewritten), which keeps the ledger lean while
 *   hundreds of millions of rows each change state three times.
 * - Only claimable rows are in `ledger_claimable`; terminal rows drop out of
 *   it, so the claim's index scan never wades through finished work.
 * - No history rows per key: `attempts`, `failures`, `last_error` and the
 *   per-state timestamps answer "what happened" without unbounded growth.
 */
export function ledgerMigration(schema: string): Migration {
  const t = (name: string) => sql.id(schema, name);
  return {
    async up(db: Kysely<unknown>) {
      // `create schema if not exists` needs CREATE on the database even when
      // the schema exists, so a least-privilege role that was given its own
      // schema (docs/PRIVILEGES.md) would fail here: only create it if missing.
      const found = await sql`select 1 from pg_namespace where nspname = ${schema}`.execute(db);
      if (found.rows.length === 0) await sql`create schema ${sql.id(schema)}`.execute(db);
      await sql`
        create table ${t('migration_ledger')} (
          id bigint generated always as identity primary key,
          src_key text not null,
          dst_key text not null,
          row_ids text[] not null default '{}',
          state text not null default 'pending'
            constraint migration_ledger_state_check check (state in
              ('pending', 'copied', 'db_updated', 'done', 'failed', 'conflict', 'missing', 'superseded')),
          attempts integer not null default 0,
          failures integer not null default 0,
          last_error text,
          failed_state text,
          src_size bigint,
          src_etag text,
          src_storage_class text,
          listed_run_id bigint,
          dst_etag text,
          rows_updated text[],
          rows_skipped text[],
          locked_by text,
          locked_until timestamptz,
          not_before timestamptz,
          planned_run_id bigint,
          created_at timestamptz not null default now(),
          updated_at timestamptz not null default now(),
          copied_at timestamptz,
          db_updated_at timestamptz,
          done_at timestamptz
        ) with (fillfactor = 70)
      `.execute(db);
      await sql`create unique index migration_ledger_src_key on ${t('migration_ledger')} (src_key)`.execute(db);
      await sql`
        create index migration_ledger_claimable on ${t('migration_ledger')} (id)
        where state in ('pending', 'copied', 'db_updated')
      `.execute(db);
      await sql`
        create table ${t('runs')} (
          id bigint generated always as identity primary key,
          command text not null,
          started_at timestamptz not null default now(),
          finished_at timestamptz,
          status text not null default 'running',
          exit_code integer,
          host text,
          pid integer,
          config jsonb not null default '{}',
          counts jsonb not null default '{}'
        )
      `.execute(db);
      // What the ledger was planned for: execute refuses another configuration.
      await sql`
        create table ${t('ledger_config')} (
          singleton boolean primary key default true check (singleton),
          source_bucket text not null,
          source_prefix text not null,
          target_bucket text not null,
          target_prefix text not null,
          table_name text not null,
          id_column text not null,
          path_column text not null,
          created_at timestamptz not null default now()
        )
      `.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await sql`drop table if exists ${t('ledger_config')}`.execute(db);
      await sql`drop table if exists ${t('runs')}`.execute(db);
      await sql`drop table if exists ${t('migration_ledger')}`.execute(db);
    },
  };
}
