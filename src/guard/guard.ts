/**
 * The delete guard: what keeps a source (or, for `revert`, a target) from
 * being deleted while a table row could name it, whatever the application
 * writes concurrently. See the README's safety model.
 *
 * Modes, strongest first, chosen by `execute` and `revert` as the strongest
 * the role allows:
 * - `trigger`: `plan` installed a row trigger on the table (before its
 *   snapshot) that records every write naming a ledger key in
 *   `late_references`, and rewrites a write of a key being deleted (or
 *   deleted) to its destination, and a write of a target path whose key is
 *   being (or was) reverted to its source. Every row naming a key is then known by
 *   primary key, and no write committed after the fence can name a deleted
 *   object.
 * - `index`: an index on the path column finds rows written since the plan
 *   (in the spellings an equality lookup can find); a post-delete sweep
 *   repairs rows written in the remaining window.
 * - `none`: the delete phase is refused (exit 2) unless `--delete-unguarded`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import type { MigrateConfig } from '../config/config.js';
import { formatTableName, regclassName } from '../config/identifiers.js';
import { FatalError, UsageError } from '../errors.js';

export type GuardMode = 'trigger' | 'index' | 'none';

/** The trigger's name on the application table. */
export const GUARD_TRIGGER = 'bucket_migrate_guard';

/**
 * The session setting the tool's own connections carry
 * (`createDatabase`): the guard trigger lets the tool's writes (the
 * compare-and-set commits of execute and revert) through untouched.
 */
export const TOOL_WRITE_SETTING = 'bucket_migrate.tool_write';

/** What the role may do, and what is installed, for the guard. */
export interface GuardStatus {
  /** The role may create triggers on the table (owner, or TRIGGER privilege). */
  canTrigger: boolean;
  /** The guard trigger exists and is the one `plan` recorded. */
  triggerInstalled: boolean;
  /** A snapshot was taken after the trigger was installed: every row is known. */
  triggerCovered: boolean;
  hasPathIndex: boolean;
}

/** Reads what the guard needs from the catalog and the ledger config (no privilege beyond the tool's). */
export async function guardStatus(db: Kysely<any>, config: MigrateConfig, hasPathIndex: boolean): Promise<GuardStatus> {
  const table = regclassName(config.table);
  const result = await sql<{ can_trigger: boolean; tg_oid: number | null; stored_oid: number | null; covered: boolean }>`
    select has_table_privilege(${table}::regclass, 'TRIGGER') as can_trigger,
           (select t.oid::int8 from pg_trigger t
             where t.tgrelid = ${table}::regclass and t.tgname = ${GUARD_TRIGGER} and t.tgenabled <> 'D') as tg_oid,
           c.guard_trigger_oid::int8 as stored_oid,
           coalesce(c.guard_snapshot_at >= c.guard_installed_at, false) as covered
    from ${sql.id(config.ledgerSchema, 'ledger_config')} as c
  `.execute(db);
  const row = result.rows[0];
  const installed = row?.tg_oid != null && Number(row.tg_oid) === Number(row.stored_oid);
  return {
    canTrigger: row?.can_trigger === true,
    triggerInstalled: installed,
    triggerCovered: installed && row?.covered === true,
    hasPathIndex,
  };
}

/** How `plan` (or a tool) says in one line what the fix is, for a role that has no guard. */
export function unguardedFix(config: MigrateConfig): string {
  const name = formatTableName(config.table);
  return (
    `create an index (CREATE INDEX CONCURRENTLY ON ${name} (${config.pathColumn}), as the table's owner) ` +
    `or let the role install the guard trigger (GRANT TRIGGER ON ${name} TO <role>) and run plan again`
  );
}

/**
 * The guard a delete phase uses, or a usage error (exit 2) naming the fix.
 * `unguarded` (`--delete-unguarded`) lets the delete phase run without one.
 */
export function chooseGuard(status: GuardStatus, config: MigrateConfig, command: string, unguarded: boolean): GuardMode {
  if (status.triggerCovered) return 'trigger';
  if (status.triggerInstalled) {
    throw new UsageError(`the guard trigger on ${formatTableName(config.table)} was installed after the last snapshot: run bucket-migrate plan again before ${command}`);
  }
  if (status.canTrigger && !unguarded) {
    throw new UsageError(`the guard trigger on ${formatTableName(config.table)} is missing: run bucket-migrate plan again (it installs it) before ${command}`);
  }
  if (status.hasPathIndex) return 'index';
  if (unguarded) return 'none';
  throw new UsageError(
    `${command} refuses to delete without a guard: rows the application writes during the run could name a deleted object; ` +
      `${unguardedFix(config)}; or --keep-source (nothing deleted), or --delete-unguarded to delete anyway`,
  );
}

/** The one line `execute` and `revert` print at the start. */
export function describeGuard(mode: GuardMode, config: MigrateConfig): string {
  const name = formatTableName(config.table);
  switch (mode) {
    case 'trigger':
      return `guard: trigger (${GUARD_TRIGGER} on ${name} records and redirects every write naming a key; no row can name a deleted object)`;
    case 'index':
      return `guard: index (rows naming a key are looked up by ${name}(${config.pathColumn}) before and after each delete; GRANT TRIGGER ON ${name} TO <role> and run plan again to close the remaining window)`;
    case 'none':
      return `guard: none (--delete-unguarded: rows the application writes during the run may name deleted objects)`;
  }
}

/**
 * What `plan` says about the delete phase, in one line: the guard it will
 * use, or what it needs.
 */
export function describePlannedGuard(status: GuardStatus, config: MigrateConfig): string {
  if (status.triggerInstalled) return describeGuard('trigger', config).replace(/^guard:/, 'guard for the delete phase:');
  if (status.hasPathIndex) return describeGuard('index', config).replace(/^guard:/, 'guard for the delete phase:');
  return `guard for the delete phase: none: execute will refuse to delete sources; ${unguardedFix(config)}`;
}

/**
 * Installs (or updates) the guard trigger, when the role may. The function
 * is created in the ledger schema, SECURITY DEFINER with a fixed
 * search_path, so the application's role needs no right on the ledger.
 * CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock on the table: it waits for
 * every transaction that already wrote it, so every write committed after
 * it goes through the trigger, and a snapshot taken after it misses nothing.
 * Returns whether the trigger is in place.
 */
export async function installGuardTrigger(db: Kysely<any>, config: MigrateConfig): Promise<boolean> {
  const schema = config.ledgerSchema;
  const table = regclassName(config.table);
  const can = await sql<{ ok: boolean }>`select has_table_privilege(${table}::regclass, 'TRIGGER') as ok`.execute(db);
  if (!can.rows[0]?.ok) return false;
  const lit = (v: string) => sql.raw(pg.escapeLiteral(v));
  const fn = sql.id(schema, 'path_guard');
  const ledger = sql.id(schema, 'migration_ledger');
  const late = sql.id(schema, 'late_references');
  const latePaths = sql.id(schema, 'late_paths');
  const keyIn = sql.id(schema, 'key_in');
  const path = sql.id(config.pathColumn);
  const id = sql.id(config.idColumn);
  // The function body is one SQL string (dollar-quoted), so values are
  // inlined as escaped literals and identifiers quoted by sql.id.
  const body = sql`
    declare
      p text := NEW.${path};
      k text;
      hit record;
    begin
      if p is null or current_setting(${lit(TOOL_WRITE_SETTING)}, true) = 'on' then return NEW; end if;
      if TG_OP = 'UPDATE' and OLD.${path} is not distinct from p then return NEW; end if;
      -- The common case, a path in neither location in any spelling, costs
      -- four prefix tests and nothing else.
      if not (starts_with(p, ${lit(config.source.prefix)}) or starts_with(p, ${lit(config.target.prefix)})
              or starts_with(p, '/') or starts_with(p, 's3://') or starts_with(p, 'http')) then
        return NEW;
      end if;
      -- The key itself needs no parsing; other spellings go through key_in.
      k := case when starts_with(p, ${lit(config.source.prefix)}) then p
                when starts_with(p, ${lit(config.target.prefix)}) then null
                else ${keyIn}(p, ${lit(config.source.bucket)}, ${lit(config.source.prefix)}) end;
      if k is not null then
        select l.id, l.state, l.failed_state, l.dst_key into hit from ${ledger} as l where l.src_key = k;
        if found then
          -- The source is going or gone (a key that failed while deleting
          -- may have lost it too); the copy exists in these states.
          if hit.state in ('deleting', 'done') or (hit.state = 'failed' and hit.failed_state = 'deleting') then
            NEW.${path} := hit.dst_key;
          end if;
          -- Recorded either way: a row redirected to the copy names the
          -- target now, and a revert must find it (by id, without an index)
          -- before it deletes that copy.
          insert into ${late} (ledger_id, row_id) values (hit.id, NEW.${id}::text) on conflict do nothing;
        else
          insert into ${latePaths} (src_key, row_id) values (k, NEW.${id}::text) on conflict do nothing;
        end if;
        return NEW;
      end if;
      k := case when starts_with(p, ${lit(config.target.prefix)}) then p
                else ${keyIn}(p, ${lit(config.target.bucket)}, ${lit(config.target.prefix)}) end;
      if k is not null then
        select l.id, l.state, l.src_key into hit from ${ledger} as l
        where l.src_key = ${lit(config.source.prefix)} || substr(k, length(${lit(config.target.prefix)}) + 1);
        if found then
          if hit.state in ('reverting', 'reverted') then
            NEW.${path} := hit.src_key;
          else
            -- In any other state the copy may exist (a key still pending
            -- may have been copied already): a revert deleting it later
            -- must find this row.
            insert into ${late} (ledger_id, row_id) values (hit.id, NEW.${id}::text) on conflict do nothing;
          end if;
        end if;
      end if;
      return NEW;
    end
  `.compile(db);
  if (body.parameters.length > 0) throw new Error('guard trigger body has bind parameters');
  const appTable = config.table.schema ? sql.id(config.table.schema, config.table.name) : sql.id(config.table.name);
  await sql`
    create or replace function ${fn}() returns trigger language plpgsql security definer
    set search_path = pg_catalog, pg_temp
    as ${sql.raw(dollarQuote(body.sql))}
  `.execute(db);
  const existing = await sql<{ oid: number }>`
    select oid::int8 as oid from pg_trigger where tgrelid = ${table}::regclass and tgname = ${GUARD_TRIGGER}
  `.execute(db);
  if (existing.rows.length === 0) {
    // CREATE TRIGGER queues for its lock behind every open transaction that
    // wrote the table, and every new write queues behind it: a short
    // lock_timeout, retried, keeps a long application transaction from
    // stalling the application's writes behind the plan.
    for (let attempt = 1; ; attempt++) {
      try {
        await db.transaction().execute(async (tx) => {
          await sql`set local lock_timeout = '2s'`.execute(tx);
          await sql`
            create trigger ${sql.id(GUARD_TRIGGER)} before insert or update of ${path} on ${appTable}
            for each row execute function ${fn}()
          `.execute(tx);
        });
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== '55P03' || attempt >= 10) {
          if ((err as { code?: string }).code === '55P03') {
            throw new FatalError(
              `plan: could not install the guard trigger on ${formatTableName(config.table)}: a transaction that wrote it stayed open for 10 tries of 2 s (see pg_stat_activity); run plan again`,
            );
          }
          throw err;
        }
        await sleep(1_000);
      }
    }
  }
  const now = await sql<{ oid: number }>`
    select oid::int8 as oid from pg_trigger where tgrelid = ${table}::regclass and tgname = ${GUARD_TRIGGER}
  `.execute(db);
  const oid = now.rows[0]!.oid;
  // A trigger new to the ledger (first plan, or dropped and re-created)
  // needs a snapshot after it before the delete phase may trust it.
  await sql`
    update ${sql.id(schema, 'ledger_config')}
    set guard_trigger_oid = ${oid}, guard_installed_at = clock_timestamp(), guard_snapshot_at = null
    where guard_trigger_oid is distinct from ${oid}
  `.execute(db);
  return true;
}

/**
 * The time a snapshot starts, taken after the trigger's install committed.
 * Kept as Postgres's own text (microseconds): a JavaScript Date holds
 * milliseconds, and a snapshot started in the same millisecond as the
 * install would then read as older than it, refusing a correct plan.
 */
export async function snapshotClock(db: Kysely<any>): Promise<string> {
  const result = await sql<{ at: string }>`select clock_timestamp()::text as at`.execute(db);
  return result.rows[0]!.at;
}

/** Records that a snapshot started at `at` covers the trigger, if it was installed before. */
export async function recordGuardSnapshot(db: Kysely<any>, schema: string, at: string): Promise<void> {
  await sql`
    update ${sql.id(schema, 'ledger_config')}
    set guard_snapshot_at = ${at}::timestamptz
    where guard_installed_at is not null and guard_installed_at <= ${at}::timestamptz
  `.execute(db);
}

function dollarQuote(text: string): string {
  let tag = '$guard$';
  for (let i = 0; text.includes(tag); i++) tag = `$guard${i}$`;
  return `${tag}${text}${tag}`;
}

/**
 * How long a batch waits for the transactions older than its fence before
 * giving its keys back (still fenced) for a later claim: at least 30 s, so
 * that an application whose transactions last seconds does not starve the
 * delete (each give-back costs a claim, and a revert run may end before it
 * comes back), and a third of the lease when that is longer. The batch's
 * heartbeat keeps renewing the lease meanwhile, and every destructive step
 * after the wait is confirmed against the lease again.
 */
export function fenceWaitMs(leaseSeconds: number): number {
  return Math.max(30_000, (leaseSeconds * 1000) / 3);
}

/** How long {@link waitForOlderTransactions} waited, or that it gave up. */
export interface WaitOutcome {
  waitedMs: number;
  /** False when some transaction older than the fence was still open at the deadline. */
  complete: boolean;
  /** The backends (pids) still holding such a transaction at the deadline, for the operator. */
  blockers?: number[];
}

/**
 * Waits until every transaction of this database that was open when it is
 * called (right after a fence committed) has ended: the virtual transaction
 * ids locked by other backends of this database, as CREATE INDEX
 * CONCURRENTLY waits. Not the xid horizon: a transaction whose snapshot
 * predates the fence but that gets its xid only after it would slip past
 * `pg_snapshot_xmin`. Prepared transactions of this database are waited for
 * too. pg_locks, pg_stat_activity (pid, datname, backend_type) and
 * pg_prepared_xacts are readable by any role.
 */
export async function waitForOlderTransactions(db: Kysely<any>, timeoutMs: number): Promise<WaitOutcome> {
  const started = Date.now();
  const open = await sql<{ vxids: string[] | null; gids: string[] | null }>`
    select (select array_agg(l.virtualxid::text)
            from pg_locks as l join pg_stat_activity as a on a.pid = l.pid
            where l.locktype = 'virtualxid' and l.granted and l.pid <> pg_backend_pid()
              and a.datname = current_database() and a.backend_type is distinct from 'autovacuum worker') as vxids,
           (select array_agg(gid) from pg_prepared_xacts where database = current_database()) as gids
  `.execute(db);
  const vxids = open.rows[0]?.vxids ?? [];
  const gids = open.rows[0]?.gids ?? [];
  if (vxids.length === 0 && gids.length === 0) return { waitedMs: 0, complete: true };
  for (let pause = 20; ; pause = Math.min(pause * 2, 250)) {
    const left = await sql<{ n: number }>`
      select (select count(*) from pg_locks where locktype = 'virtualxid' and granted and virtualxid::text = any(${vxids}::text[]))
           + (select count(*) from pg_prepared_xacts where gid = any(${gids}::text[]) and database = current_database()) as n
    `.execute(db);
    if (Number(left.rows[0]?.n ?? 0) === 0) return { waitedMs: Date.now() - started, complete: true };
    if (Date.now() - started >= timeoutMs) {
      const blockers = await sql<{ pid: number }>`
        select distinct pid from pg_locks where locktype = 'virtualxid' and granted and virtualxid::text = any(${vxids}::text[])
      `.execute(db);
      return { waitedMs: Date.now() - started, complete: false, blockers: blockers.rows.map((r) => r.pid) };
    }
    await sleep(pause);
  }
}
