import { sql, type Kysely, type Migration } from 'kysely';
import { quoteIdent } from '../src/config/identifiers.js';

/** Rows per counter: statements from different backends rarely wait on each other. */
export const COUNT_SHARDS = 8;

/**
 * `ledger_counts`: what `report` shows, kept by the ledger's own statements,
 * so that `report` reads a few hundred small rows instead of scanning the
 * ledger (3.2 s at 1M keys, 16 min at 300M).
 *
 * A statement-level trigger (one per INSERT, UPDATE, DELETE statement, not
 * per row) reads the statement's transition tables and adds, per counter,
 * +1 for each new row version and −1 for each old one:
 * - `state`: keys per state;
 * - `attempts`: keys per claim count;
 * - `error`: keys per last error (quoted values blanked, as report and the
 *   error_summary view group them) and state;
 * - `copied`, `done`, `settled`: keys per minute of `copied_at`, `done_at`
 *   and settle time (`coalesce(done_at, updated_at)` of a terminal row, as
 *   in the throughput_per_minute view); the label is the minute's epoch;
 * - `lease`: live keys leased per owner, with the latest lease end written;
 * - `activity`: row versions written, and when (the ledger's last change).
 *
 * No hot row: each counter has {@link COUNT_SHARDS} rows and a statement
 * adds to the one of its backend (`pg_backend_pid() % shards`); readers sum
 * them. A statement upserts its counters in one order, so two statements
 * cannot deadlock on them. The cost is one small aggregate over the batch's
 * old and new row versions per statement, in the same transaction, so the
 * counts are exact at every commit. Plan's first bulk load disables the
 * insert trigger inside its transaction (a transition table of every row
 * would be collected even if the function returned at once) and writes the
 * counts itself; `bucket_migrate.skip_counts = on` also makes the functions
 * return at once. TRUNCATE of the ledger empties the counts.
 *
 * The initial counts of an existing ledger take one scan here, once.
 */
export function ledgerCountsMigration(schema: string): Migration {
  const t = (name: string) => sql.id(schema, name);
  const ledger = t('migration_ledger');
  const counts = t('ledger_counts');
  // Unsettled: the forward live states and revert's `reverting` (as UNSETTLED_STATES).
  const live = sql`('pending', 'copied', 'db_updated', 'deleting', 'reverting')`;
  // The counters of one set of row versions `r`, each with weight `w`.
  const deltas = (rows: string, w: number) => sql`
    select 'state' as kind, r.state as label, '' as st, ${sql.lit(w)} as d, null::timestamptz as u from ${sql.raw(rows)} r
    union all select 'attempts', r.attempts::text, '', ${sql.lit(w)}, null from ${sql.raw(rows)} r
    union all select 'error', regexp_replace(r.last_error, '"[^"]*"', '"…"', 'g'), r.state, ${sql.lit(w)}, null
      from ${sql.raw(rows)} r where r.last_error is not null
    union all select 'copied', extract(epoch from date_trunc('minute', r.copied_at))::bigint::text, '', ${sql.lit(w)}, null
      from ${sql.raw(rows)} r where r.copied_at is not null
    union all select 'done', extract(epoch from date_trunc('minute', r.done_at))::bigint::text, '', ${sql.lit(w)}, null
      from ${sql.raw(rows)} r where r.done_at is not null
    union all select 'settled', extract(epoch from date_trunc('minute', coalesce(r.done_at, r.updated_at)))::bigint::text, '', ${sql.lit(w)}, null
      from ${sql.raw(rows)} r where r.state not in ${live}
    union all select 'lease', r.locked_by, '', ${sql.lit(w)}, ${w > 0 ? sql`r.locked_until` : sql`null`}
      from ${sql.raw(rows)} r where r.locked_by is not null and r.state in ${live}
    union all select 'activity', '', '', ${sql.lit(w > 0 ? 1 : 0)}, now() from ${sql.raw(rows)} r`;
  const upsert = (parts: ReturnType<typeof sql>[]) => sql`
    insert into ${counts} as c (kind, label, state, shard, n, until)
    select kind, label, st, pg_backend_pid() % ${sql.lit(COUNT_SHARDS)}, sum(d), max(u)
    from (${sql.join(parts, sql` union all `)}) as x
    group by kind, label, st
    having sum(d) <> 0 or max(u) is not null
    order by kind, label, st
    on conflict (kind, label, state, shard) do update
      set n = c.n + excluded.n, until = greatest(c.until, excluded.until), changed_at = now()`;
  const fn = (name: string, parts: ReturnType<typeof sql>[]) => sql`
    create function ${t(name)}() returns trigger language plpgsql as $body$
    begin
      if coalesce(current_setting('bucket_migrate.skip_counts', true), '') = 'on' then return null; end if;
      ${upsert(parts)};
      return null;
    end
    $body$`;
  return {
    async up(db: Kysely<unknown>) {
      await sql`
        create table ${counts} (
          kind text not null,
          label text not null,
          state text not null default '',
          shard integer not null,
          n bigint not null default 0,
          until timestamptz,
          changed_at timestamptz not null default now(),
          primary key (kind, label, state, shard)
        )
      `.execute(db);
      // plpgsql compiles the body when first called; the statements reference
      // the transition tables by the names the triggers give them.
      await fn('ledger_counts_insert', [deltas('new_rows', 1)]).execute(db);
      await fn('ledger_counts_update', [deltas('old_rows', -1), deltas('new_rows', 1)]).execute(db);
      await fn('ledger_counts_delete', [deltas('old_rows', -1)]).execute(db);
      await sql`
        create function ${t('ledger_counts_truncate')}() returns trigger language plpgsql as $body$
        begin
          delete from ${counts};
          return null;
        end
        $body$`.execute(db);
      await sql`create trigger ledger_counts_insert after insert on ${ledger} referencing new table as new_rows
                for each statement execute function ${t('ledger_counts_insert')}()`.execute(db);
      await sql`create trigger ledger_counts_update after update on ${ledger} referencing old table as old_rows new table as new_rows
                for each statement execute function ${t('ledger_counts_update')}()`.execute(db);
      await sql`create trigger ledger_counts_delete after delete on ${ledger} referencing old table as old_rows
                for each statement execute function ${t('ledger_counts_delete')}()`.execute(db);
      await sql`create trigger ledger_counts_truncate after truncate on ${ledger}
                for each statement execute function ${t('ledger_counts_truncate')}()`.execute(db);
      // The keys report lists per exception state, found without a scan. Rows
      // enter these states rarely and never leave them during a run, and
      // updates that do not change `state` stay HOT.
      await sql`
        create index migration_ledger_exceptions on ${ledger} (state, id)
        where state in ('failed', 'conflict', 'missing', 'superseded', 'archived')
      `.execute(db);
      // The counts of the rows already there: one scan, once.
      await sql`lock table ${ledger} in share mode`.execute(db);
      await sql`insert into ${counts} as c (kind, label, state, shard, n, until)
                select kind, label, st, 0, sum(d), max(u) from (${deltas(`${quoteIdent(schema)}.migration_ledger`, 1)}) as x
                group by kind, label, st having sum(d) <> 0`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      for (const op of ['insert', 'update', 'delete', 'truncate']) {
        await sql`drop trigger if exists ${sql.id(`ledger_counts_${op}`)} on ${ledger}`.execute(db);
        await sql`drop function if exists ${t(`ledger_counts_${op}`)}()`.execute(db);
      }
      await sql`drop index if exists ${t('migration_ledger_exceptions')}`.execute(db);
      await sql`drop table if exists ${counts}`.execute(db);
    },
  };
}

