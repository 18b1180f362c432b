import { sql, type Kysely, type Migration } from 'kysely';

/**
 * What the delete guard records (see src/guard/).
 *
 * - `deleting`: a live state between `db_updated` and `done`. The key is
 *   fenced: its source is about to be deleted (or is being deleted). The
 *   guard trigger rewrites new writes of its source path to its destination.
 * - `late_references`: (ledger key, table row) pairs for rows that name a
 *   ledger key but are not in its `row_ids`: rows written after the plan
 *   (recorded by the guard trigger) and rows naming a key in another
 *   spelling (a leading '/', an s3:// or https:// URL; recorded by `plan`).
 *   They are found by primary key, so no index on the path column is needed.
 * - `late_paths`: the same for a write naming a source key the ledger did
 *   not hold yet when the trigger ran (a key a running `plan` is adding).
 * - `ledger_config.guard_*`: the trigger `plan` installed, and whether a
 *   snapshot was taken after it (only then is every row known).
 *
 * The state check is rebuilt from the constraint as it stands (as 0005 does),
 * and the claim's partial index is recreated to cover `deleting`.
 */
export function guardMigration(schema: string): Migration {
  const ledger = sql.id(schema, 'migration_ledger');
  const currentStates = async (db: Kysely<unknown>): Promise<string[]> => {
    const result = await sql<{ def: string }>`
      select pg_get_constraintdef(c.oid) as def
      from pg_constraint c join pg_class t on t.oid = c.conrelid join pg_namespace n on n.oid = t.relnamespace
      where n.nspname = ${schema} and t.relname = 'migration_ledger' and c.conname = 'migration_ledger_state_check'
    `.execute(db);
    return [...(result.rows[0]?.def ?? '').matchAll(/'([a-z_]+)'/g)].map((m) => m[1]!);
  };
  const check = (states: string[]) => sql`
    alter table ${ledger}
      drop constraint migration_ledger_state_check,
      add constraint migration_ledger_state_check check (state in (${sql.join(states.map((s) => sql.lit(s)))}))
  `;
  const claimable = (states: string[]) => sql`
    create index migration_ledger_claimable on ${ledger} (id)
    where state in (${sql.join(states.map((s) => sql.lit(s)))})
  `;
  return {
    async up(db: Kysely<unknown>) {
      const states = await currentStates(db);
      if (!states.includes('deleting')) await check([...states, 'deleting']).execute(db);
      await sql`drop index if exists ${sql.id(schema, 'migration_ledger_claimable')}`.execute(db);
      await claimable(['pending', 'copied', 'db_updated', 'deleting']).execute(db);
      await sql`
        create table ${sql.id(schema, 'late_references')} (
          ledger_id bigint not null,
          row_id text not null,
          recorded_at timestamptz not null default now(),
          primary key (ledger_id, row_id)
        )
      `.execute(db);
      // Writes naming a key under the source prefix that was not in the
      // ledger when the trigger ran (a key the running plan is adding):
      // kept by key, so no write is lost to the race between a plan's
      // snapshot and its commit.
      await sql`
        create table ${sql.id(schema, 'late_paths')} (
          src_key text not null,
          row_id text not null,
          recorded_at timestamptz not null default now(),
          primary key (src_key, row_id)
        )
      `.execute(db);
      // The key a path names under (bucket, prefix), in any spelling `plan`
      // recognises, or NULL: the key itself, '/' + key, s3://bucket/key, and
      // http(s) URLs naming the bucket path-style (https://host/bucket/key)
      // or virtual-hosted (https://bucket.host/key). A URL's query string or
      // fragment is ignored; percent-escapes are not decoded. No SET clause,
      // so that it can be inlined: its body names only pg_catalog
      // functions, which are always found first.
      await sql`
        create function ${sql.id(schema, 'key_in')}(path text, bucket text, prefix text) returns text
        language sql immutable parallel safe
        as $$
          select case
            when path is null then null
            when starts_with(path, prefix) then path
            when starts_with(path, '/' || prefix) then substr(path, 2)
            when starts_with(path, 's3://' || bucket || '/' || prefix) then substr(path, length(bucket) + 7)
            when path ~ '^https?://' then (
              select case
                when starts_with(m[1], bucket || '.') and starts_with(m[2], prefix) then m[2]
                when starts_with(m[2], bucket || '/' || prefix) then substr(m[2], length(bucket) + 2)
              end
              from regexp_match(path, '^https?://([^/?#]+)/([^?#]*)') as m)
          end
        $$
      `.execute(db);
      await sql`
        alter table ${sql.id(schema, 'ledger_config')}
          add column guard_trigger_oid oid,
          add column guard_installed_at timestamptz,
          add column guard_snapshot_at timestamptz
      `.execute(db);
    },
    async down(db: Kysely<unknown>) {
      // A fenced key's source still exists: back to db_updated.
      await sql`update ${ledger} set state = 'db_updated' where state = 'deleting'`.execute(db);
      await sql`alter table ${sql.id(schema, 'ledger_config')} drop column guard_trigger_oid, drop column guard_installed_at, drop column guard_snapshot_at`.execute(db);
      await sql`drop table if exists ${sql.id(schema, 'late_references')}`.execute(db);
      await sql`drop table if exists ${sql.id(schema, 'late_paths')}`.execute(db);
      await sql`drop function if exists ${sql.id(schema, 'path_guard')}() cascade`.execute(db);
      await sql`drop function if exists ${sql.id(schema, 'key_in')}(text, text, text)`.execute(db);
      await sql`drop index if exists ${sql.id(schema, 'migration_ledger_claimable')}`.execute(db);
      await claimable(['pending', 'copied', 'db_updated']).execute(db);
      await check((await currentStates(db)).filter((s) => s !== 'deleting')).execute(db);
    },
  };
}
