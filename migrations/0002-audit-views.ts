import { sql, type Kysely, type Migration } from 'kysely';

/**
 * Read-only views over the ledger for audits from psql (see docs/AUDIT.md).
 *
 * Design notes:
 * - Views only: nothing is added to the hot ledger table, so no index slows
 *   the claim or commit statements, and HOT updates stay HOT.
 * - A key "settles" when it reaches a terminal state; its settle time is
 *   `done_at` for `done` and the last change (`updated_at`) otherwise, which
 *   is when the terminal transition wrote it.
 * - Error messages are grouped with quoted values (ETags) blanked, so one
 *   cause with many ETags counts as one group. `report` uses the same rule.
 * - The ledger keeps no history rows, so these views show the latest state
 *   and the per-state timestamps of each key, which is what the ledger has.
 */
export function auditViewsMigration(schema: string): Migration {
  const t = (name: string) => sql.id(schema, name);
  const ledger = t('migration_ledger');
  return {
    async up(db: Kysely<unknown>) {
      await sql`
        create view ${t('progress')} as
        select s.state, s.terminal, coalesce(c.keys, 0)::bigint as keys,
               round(100.0 * coalesce(c.keys, 0) / nullif(sum(coalesce(c.keys, 0)) over (), 0), 2) as percent
        from (values ('pending', false, 1), ('copied', false, 2), ('db_updated', false, 3), ('done', true, 4),
                     ('failed', true, 5), ('conflict', true, 6), ('missing', true, 7), ('superseded', true, 8),
                     ('archived', true, 9))
             as s(state, terminal, ord)
        left join (select state, count(*) as keys from ${ledger} group by state) as c using (state)
        order by s.ord
      `.execute(db);
      await sql`
        create view ${t('failures')} as
        select id as ledger_id, state, src_key, dst_key, row_ids, rows_skipped, failed_state,
               attempts, failures, last_error, updated_at
        from ${ledger}
        where state not in ('pending', 'copied', 'db_updated', 'done')
      `.execute(db);
      await sql`
        create view ${t('error_summary')} as
        select regexp_replace(last_error, '"[^"]*"', '"…"', 'g') as error, state,
               count(*) as keys, min(id) as example_ledger_id, max(updated_at) as last_seen
        from ${ledger}
        where last_error is not null
        group by 1, 2
        order by keys desc, error
      `.execute(db);
      await sql`
        create view ${t('throughput_per_minute')} as
        select minute,
               count(*) filter (where event = 'copied') as copied,
               count(*) filter (where event = 'db_updated') as db_updated,
               count(*) filter (where event = 'done') as done,
               count(*) filter (where event = 'settled') as settled
        from (
          select date_trunc('minute', copied_at) as minute, 'copied' as event from ${ledger} where copied_at is not null
          union all
          select date_trunc('minute', db_updated_at), 'db_updated' from ${ledger} where db_updated_at is not null
          union all
          select date_trunc('minute', done_at), 'done' from ${ledger} where done_at is not null
          union all
          select date_trunc('minute', coalesce(done_at, updated_at)), 'settled' from ${ledger}
          where state not in ('pending', 'copied', 'db_updated')
        ) as events
        group by minute
        order by minute
      `.execute(db);
      await sql`
        create view ${t('key_events')} as
        select l.id as ledger_id, l.src_key, l.dst_key, e.step, e.event, e.at, l.state as current_state, l.last_error
        from ${ledger} as l
        cross join lateral (values (1, 'planned', l.created_at), (2, 'copied', l.copied_at), (3, 'db_updated', l.db_updated_at),
                                   (4, 'done', l.done_at), (5, 'last_change', l.updated_at)) as e(step, event, at)
        where e.at is not null
      `.execute(db);
      await sql`
        create view ${t('row_history')} as
        select r.row_id, l.id as ledger_id, l.src_key as old_path, l.dst_key as new_path, l.state as key_state,
               case when r.row_id = any(coalesce(l.rows_updated, '{}')) then 'updated'
                    when r.row_id = any(coalesce(l.rows_skipped, '{}')) then 'skipped'
                    else 'not yet' end as row_outcome,
               l.created_at as planned_at, l.db_updated_at as changed_at, l.done_at, l.last_error
        from ${ledger} as l
        cross join lateral unnest(l.row_ids) as r(row_id)
      `.execute(db);
      await sql`
        create view ${t('row_changes')} as
        select r.row_id, l.id as ledger_id, l.src_key as old_path, l.dst_key as new_path, l.db_updated_at as changed_at,
               l.state as key_state
        from ${ledger} as l
        cross join lateral unnest(l.rows_updated) as r(row_id)
      `.execute(db);
    },
    async down(db: Kysely<unknown>) {
      for (const view of ['row_changes', 'row_history', 'key_events', 'throughput_per_minute', 'error_summary', 'failures', 'progress']) {
        await sql`drop view if exists ${t(view)}`.execute(db);
      }
    },
  };
}
