import { sql, type Kysely, type Migration } from 'kysely';

/**
 * The states the audit views know, in display order, and whether each is
 * terminal (settled). Frozen here, as a migration must be: a state added
 * later is a new migration that calls {@link createAuditViews} with the
 * longer list (one line), and test/revert-views.test.ts fails until the
 * `progress` view lists every state of `ALL_STATES`.
 */
export const AUDIT_VIEW_STATES_0007: ReadonlyArray<readonly [state: string, terminal: boolean]> = [
  ['pending', false],
  ['copied', false],
  ['db_updated', false],
  ['reverting', false],
  ['done', true],
  ['failed', true],
  ['conflict', true],
  ['missing', true],
  ['superseded', true],
  ['archived', true],
  ['reverted', true],
];

/**
 * Two things `execute` and `revert` need to know about each other and about
 * the views of a reverted ledger:
 *
 * The runs table learns whether a run is alive: `heartbeat_at` (written
 * every few seconds by the running process), `pid_namespace` (with `host`
 * and `pid`, enough to tell on this host that its process is gone) and
 * `process_id` (the prefix of its lease owner ids, so the leases of a gone
 * process can be released at once). Nullable columns without defaults: no
 * table rewrite. Runs recorded before have none, and count as stale.
 *
 * And it rebuilds the audit views of 0002 so that they are right after a revert:
 *
 * - `progress` lists `reverting` (unsettled: rows back, target copy not yet
 *   deleted) and `reverted` (settled); before, a reverted ledger showed
 *   zeros in every row.
 * - `failures` no longer lists `reverting` and `reverted` keys: neither is
 *   a failure (it listed every state but the forward live ones and done).
 * - `throughput_per_minute` gains a `reverted` column, and stops counting a
 *   key that is still `reverting` as settled.
 * - `key_events` gains the `reverted` step; `row_history` says `reverted`
 *   for a row revert moved back, and `row_changes` lists those moves back
 *   too (old and new path swapped), so "which rows changed between T1 and
 *   T2" stays true across a revert.
 *
 * Views only, as in 0002: nothing is added to the ledger table. `create or
 * replace view` keeps existing columns in place and adds new ones at the
 * end, so queries written against 0002's views keep working.
 */
export function runsLivenessRevertViewsMigration(schema: string): Migration {
  return {
    async up(db: Kysely<unknown>) {
      await sql`
        alter table ${sql.id(schema, 'runs')}
          add column heartbeat_at timestamptz,
          add column pid_namespace text,
          add column process_id text
      `.execute(db);
      await createAuditViews(db, schema, AUDIT_VIEW_STATES_0007);
    },
    async down(db: Kysely<unknown>) {
      await sql`alter table ${sql.id(schema, 'runs')} drop column heartbeat_at, drop column pid_namespace, drop column process_id`.execute(db);
      // Back to 0002's definitions: drop and let the caller re-run 0002's up.
      for (const view of ['row_changes', 'row_history', 'key_events', 'throughput_per_minute', 'failures', 'progress']) {
        await sql`drop view if exists ${sql.id(schema, view)}`.execute(db);
      }
      const { auditViewsMigration } = await import('./0002-audit-views.js');
      await sql`drop view if exists ${sql.id(schema, 'error_summary')}`.execute(db);
      await auditViewsMigration(schema).up(db);
    },
  };
}

/**
 * Creates (or replaces) the views whose definition depends on the list of
 * states: `progress`, `failures`, `throughput_per_minute`, `key_events`,
 * `row_history` and `row_changes`. `states` is every state with whether it
 * is terminal; unsettled ones are those that are not.
 */
export async function createAuditViews(
  db: Kysely<unknown>,
  schema: string,
  states: ReadonlyArray<readonly [state: string, terminal: boolean]>,
): Promise<void> {
  const t = (name: string) => sql.id(schema, name);
  const ledger = t('migration_ledger');
  const list = (names: string[]) => sql.join(names.map((s) => sql.lit(s)));
  const unsettled = list(states.filter(([, terminal]) => !terminal).map(([s]) => s));
  const values = sql.join(states.map(([state, terminal], i) => sql`(${sql.lit(state)}, ${sql.lit(terminal)}, ${sql.lit(i + 1)})`));
  // Keys the tool left on purpose or could not move: not unsettled, and not a success.
  const notFailures = list([...states.filter(([, terminal]) => !terminal).map(([s]) => s), 'done', 'reverted']);

  await sql`
    create or replace view ${t('progress')} as
    select s.state, s.terminal, coalesce(c.keys, 0)::bigint as keys,
           round(100.0 * coalesce(c.keys, 0) / nullif(sum(coalesce(c.keys, 0)) over (), 0), 2) as percent
    from (values ${values}) as s(state, terminal, ord)
    left join (select state, count(*) as keys from ${ledger} group by state) as c using (state)
    order by s.ord
  `.execute(db);
  await sql`
    create or replace view ${t('failures')} as
    select id as ledger_id, state, src_key, dst_key, row_ids, rows_skipped, failed_state,
           attempts, failures, last_error, updated_at
    from ${ledger}
    where state not in (${notFailures})
  `.execute(db);
  await sql`
    create or replace view ${t('throughput_per_minute')} as
    select minute,
           count(*) filter (where event = 'copied') as copied,
           count(*) filter (where event = 'db_updated') as db_updated,
           count(*) filter (where event = 'done') as done,
           count(*) filter (where event = 'settled') as settled,
           count(*) filter (where event = 'reverted') as reverted
    from (
      select date_trunc('minute', copied_at) as minute, 'copied' as event from ${ledger} where copied_at is not null
      union all
      select date_trunc('minute', db_updated_at), 'db_updated' from ${ledger} where db_updated_at is not null
      union all
      select date_trunc('minute', done_at), 'done' from ${ledger} where done_at is not null
      union all
      select date_trunc('minute', reverted_at), 'reverted' from ${ledger} where reverted_at is not null
      union all
      select date_trunc('minute', coalesce(reverted_at, done_at, updated_at)), 'settled' from ${ledger}
      where state not in (${unsettled})
    ) as events
    group by minute
    order by minute
  `.execute(db);
  await sql`
    create or replace view ${t('key_events')} as
    select l.id as ledger_id, l.src_key, l.dst_key, e.step, e.event, e.at, l.state as current_state, l.last_error
    from ${ledger} as l
    cross join lateral (values (1, 'planned', l.created_at), (2, 'copied', l.copied_at), (3, 'db_updated', l.db_updated_at),
                               (4, 'done', l.done_at), (5, 'last_change', l.updated_at), (6, 'reverted', l.reverted_at)) as e(step, event, at)
    where e.at is not null
  `.execute(db);
  await sql`
    create or replace view ${t('row_history')} as
    select r.row_id, l.id as ledger_id, l.src_key as old_path, l.dst_key as new_path, l.state as key_state,
           case when r.row_id = any(coalesce(l.rows_reverted, '{}')) then 'reverted'
                when r.row_id = any(coalesce(l.rows_updated, '{}')) then 'updated'
                when r.row_id = any(coalesce(l.rows_skipped, '{}')) then 'skipped'
                else 'not yet' end as row_outcome,
           l.created_at as planned_at, l.db_updated_at as changed_at, l.done_at, l.last_error, l.reverted_at
    from ${ledger} as l
    cross join lateral unnest(l.row_ids) as r(row_id)
  `.execute(db);
  await sql`
    create or replace view ${t('row_changes')} as
    select r.row_id, l.id as ledger_id, l.src_key as old_path, l.dst_key as new_path, l.db_updated_at as changed_at,
           l.state as key_state
    from ${ledger} as l
    cross join lateral unnest(l.rows_updated) as r(row_id)
    union all
    select r.row_id, l.id, l.dst_key, l.src_key, coalesce(l.reverted_at, l.updated_at), l.state
    from ${ledger} as l
    cross join lateral unnest(l.rows_reverted) as r(row_id)
  `.execute(db);
}
