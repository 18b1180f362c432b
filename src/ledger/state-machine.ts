/**
 * The ledger's state machine: every state, and every transition as one SQL
 * statement. Every statement in src/ that writes `state` is in this file.
 *
 *           plan (insertPlannedKeys, bulkLoadQuery, recordListedPage)
 *             │
 *             ▼
 *   pending ──copy──▶ copied ──commitRows──▶ db_updated ──fenceDeletes──▶ deleting ──delete──▶ done
 *    ▲ │                 │ ▲  ◀──────────────requeueNamed (a row still names it)┘  ▲ │            │
 *    │ │                 │                       fenceDeletes again (a later claim) ┘ │            │
 *    │ │                 │        refuseDelete (db_updated|deleting: a spelled row) ─▶ failed      │
 *    └─┼─────────────────┼──── re-plan: a row names it again (done, superseded) ───────────────────┘
 *      ├─▶ conflict      └─▶ superseded   (no row points at the key any more)
 *      │                        └──execute --finish-superseded──▶ db_updated (then fenced, checked, deleted)
 *      ├─▶ missing       (copy, or plan --list: not in the listing)
 *      ├─▶ archived      (the source must be restored from an archive class first)
 *      └─▶ failed        (from any live state, after --max-attempts failures;
 *                         at plan time for keys S3 cannot take)
 *   failed, archived ──execute --retry-failed──▶ the state it failed in
 *
 * Every edge, one per line, as test/state-machine.test.ts reads them and
 * checks them against {@link TRANSITIONS} and against the SQL below (a
 * transition written in SQL and missing here fails that test):
 *
 * @transitions
 *   new -> pending          insertPlannedKeys, bulkLoadQuery, recordListedPage
 *   new -> failed           insertPlannedKeys, bulkLoadQuery, recordListedPage
 *   done -> pending         insertPlannedKeys
 *   superseded -> pending   insertPlannedKeys
 *   superseded -> db_updated finishSuperseded
 *   pending -> copied       markCopied
 *   pending -> conflict     markUnmovable
 *   pending -> missing      markUnmovable, markUnlistedMissing
 *   pending -> archived     markUnmovable
 *   copied -> db_updated    commitRows
 *   copied -> superseded    commitRows
 *   db_updated -> deleting  fenceDeletes
 *   deleting -> copied      requeueNamed
 *   deleting -> done        markDone
 *   deleting -> failed      recordFailures, refuseDelete, recordRevertFailures
 *   failed -> deleting      requeueFailed, requeueRevertFailed
 *   deleting -> reverting   revertRows
 *   deleting -> reverted    revertRows
 *   pending -> failed       recordFailures
 *   copied -> failed        recordFailures
 *   db_updated -> failed    recordFailures, refuseDelete, recordRevertFailures
 *   failed -> pending       requeueFailed
 *   failed -> copied        requeueFailed
 *   failed -> db_updated    requeueFailed, requeueRevertFailed
 *   failed -> done          requeueFailed, requeueRevertFailed
 *   failed -> reverting     requeueRevertFailed, revertRows
 *   archived -> pending     requeueFailed
 *   db_updated -> reverted  revertRows
 *   db_updated -> reverting revertRows
 *   done -> reverting       revertRows
 *   done -> reverted        revertRows
 *   failed -> reverted      revertRows
 *   reverting -> reverted   markReverted
 *   done -> failed          recordRevertFailures
 *   reverting -> failed     recordRevertFailures
 * @end
 *
 * (`new` is a key's birth: an insert.) Rows are born `pending` in `plan`. A
 * worker owns a row while `locked_by` is its id and `locked_until` is in the
 * future; every transition after the claim is guarded by `locked_by = me`,
 * so a worker whose lease was taken over changes nothing. No transaction
 * spans an S3 call: each statement here commits on its own.
 *
 * The order per key is what keeps every table row pointing at an existing
 * object: the copy exists before any row names it, and the source is
 * deleted only after the commit that moved every row off it.
 *
 * `deleting` is the delete fence (src/guard/guard.ts): once a key is in it,
 * the guard trigger rewrites any new write of its source path to its
 * destination; the worker waits out every transaction older than the fence,
 * checks every row that could name the key (`findNamingRows`), and only
 * then deletes the source. A key given back mid-wait stays `deleting` (its
 * source exists; the next claim fences and waits again).
 *
 * The staged cutover (`execute --keep-source`, then `--delete-only`) parks
 * keys in db_updated (`parkDbUpdated`) and, when a target is no longer the
 * copy, refuses the delete (`refuseDelete`: db_updated → failed).
 *
 * `revert` walks the other way, with transitions of its own below:
 *
 *   db_updated|deleting ──rows back──▶ reverted   (the source never left)
 *   done ──copy back──▶ (done) ──rows back──▶ reverting ──delete target──▶ reverted
 *   deleting (source gone) ──copy back──▶ (deleting) ──rows back──▶ reverting
 *   reverting ──revertNamed (rows written since)──▶ reverting
 *   failed (a refused delete, failed_state db_updated) is treated as db_updated
 *
 * with the same order: the source exists (or is copied back) before any row
 * names it again, and the target copy is deleted only after the commit that
 * moved the rows off it.
 *
 * Leases of a process that is gone (killed on this host: its runs row says
 * host and pid, and no such process exists) are cut short by
 * {@link releaseDeadLeases} (to a few seconds, not --lease-seconds), which
 * changes no state.
 */
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { LocationConfig } from '../config/config.js';
import type { TableName } from '../config/identifiers.js';
import type { GuardMode } from '../guard/guard.js';
import { destinationKey, keyRefusal, type RefusalRules } from '../plan/key-refusal.js';
import { claimableIds } from './claim-scan.js';

/** The states `execute` works on: claimable by execute. */
export const LIVE_STATES = ['pending', 'copied', 'db_updated', 'deleting'] as const;
/** The states a key is left in part-way back: claimable by `revert` only. */
export const REVERT_LIVE_STATES = ['reverting'] as const;
/** Settled states: nothing more happens to the key unless asked (`--retry-failed`, a re-plan, `revert`). */
export const TERMINAL_STATES = ['done', 'failed', 'conflict', 'missing', 'superseded', 'archived', 'reverted'] as const;
/** Every state in which a key is not settled: what report counts as remaining and validate as unfinished. */
export const UNSETTLED_STATES = [...LIVE_STATES, ...REVERT_LIVE_STATES] as const;
/** Every state, in the order report and the `progress` view show them. */
export const ALL_STATES = [...LIVE_STATES, ...REVERT_LIVE_STATES, ...TERMINAL_STATES] as const;

export type LiveState = (typeof LIVE_STATES)[number];
export type RevertLiveState = (typeof REVERT_LIVE_STATES)[number];
export type TerminalState = (typeof TERMINAL_STATES)[number];
export type LedgerState = (typeof ALL_STATES)[number];

/** `state in (...)` for a list of states, as literals (so a partial index's predicate can match it). */
export function stateIn(states: readonly LedgerState[]): RawBuilder<unknown> {
  return sql`state in (${sql.join(states.map((s) => sql.lit(s)))})`;
}

/** A key's birth, as the `from` of a transition that inserts it. */
export type FromState = LedgerState | 'new';

/**
 * Every transition each function of this file makes, from → to (no-change
 * writes left out). The header's `@transitions` list must be exactly their
 * union, and each function's SQL may only name these states:
 * test/state-machine.test.ts checks both.
 */
export const TRANSITIONS = {
  insertPlannedKeys: [['new', 'pending'], ['new', 'failed'], ['done', 'pending'], ['superseded', 'pending']],
  bulkLoadQuery: [['new', 'pending'], ['new', 'failed']],
  recordListedPage: [['new', 'pending'], ['new', 'failed']],
  markUnlistedMissing: [['pending', 'missing']],
  markCopied: [['pending', 'copied']],
  markUnmovable: [['pending', 'conflict'], ['pending', 'missing'], ['pending', 'archived']],
  commitRows: [['copied', 'db_updated'], ['copied', 'superseded']],
  // A key claimed again in `deleting` is fenced again: no state change.
  fenceDeletes: [['db_updated', 'deleting']],
  requeueNamed: [['deleting', 'copied']],
  markDone: [['deleting', 'done']],
  recordFailures: [['pending', 'failed'], ['copied', 'failed'], ['db_updated', 'failed'], ['deleting', 'failed']],
  finishSuperseded: [['superseded', 'db_updated']],
  requeueFailed: [
    ['failed', 'pending'], ['failed', 'copied'], ['failed', 'db_updated'], ['failed', 'deleting'], ['failed', 'done'],
    ['archived', 'pending'],
  ],
  refuseDelete: [['db_updated', 'failed'], ['deleting', 'failed']],
  revertRows: [
    ['db_updated', 'reverting'], ['db_updated', 'reverted'], ['deleting', 'reverting'], ['deleting', 'reverted'],
    ['done', 'reverting'], ['done', 'reverted'], ['failed', 'reverting'], ['failed', 'reverted'],
  ],
  markReverted: [['reverting', 'reverted']],
  recordRevertFailures: [['db_updated', 'failed'], ['deleting', 'failed'], ['done', 'failed'], ['reverting', 'failed']],
  requeueRevertFailed: [['failed', 'db_updated'], ['failed', 'deleting'], ['failed', 'done'], ['failed', 'reverting']],
} as const satisfies Record<string, ReadonlyArray<readonly [FromState, LedgerState]>>;

/** A claimed ledger row, as a worker sees it. */
export interface LedgerRow {
  id: number;
  src_key: string;
  dst_key: string;
  row_ids: string[];
  state: LiveState;
  attempts: number;
  failures: number;
  src_size: number | null;
  src_etag: string | null;
  /** From `plan --list`; null when the source was never listed. */
  src_storage_class: string | null;
  dst_etag: string | null;
}

/** Everything a transition needs to address the ledger and the table. */
export interface LedgerContext {
  db: Kysely<any>;
  schema: string;
  table: TableName;
  idColumn: string;
  pathColumn: string;
  /** The id column's type, as a cast from text (from `inspectTable`). */
  idCast: string;
  /** This worker's lease owner id. */
  me: string;
  /** The delete guard in force (src/guard/guard.ts); `index` also looks rows up by path. */
  guard?: GuardMode;
  /** Source and target locations: the spellings of a key (`key_in`) name a bucket. */
  locations?: { source: LocationConfig; target: LocationConfig };
}

/** Narrows a claim to a slice of the ledger (canaries, ranges). */
export interface ClaimFilter {
  /** Only rows whose state is one of these. */
  states?: readonly LiveState[];
}

const ledger = (ctx: Pick<LedgerContext, 'schema'>) => sql.id(ctx.schema, 'migration_ledger');
const late = (ctx: Pick<LedgerContext, 'schema'>) => sql.id(ctx.schema, 'late_references');
const latePaths = (ctx: Pick<LedgerContext, 'schema'>) => sql.id(ctx.schema, 'late_paths');

const appTable = (ctx: LedgerContext): RawBuilder<unknown> =>
  ctx.table.schema ? sql.id(ctx.table.schema, ctx.table.name) : sql.id(ctx.table.name);

const RETURNING = sql`l.id, l.src_key, l.dst_key, l.row_ids, l.state, l.attempts, l.failures, l.src_size, l.src_etag, l.src_storage_class, l.dst_etag`;

// The shape every transition shares, forward (execute) and back (revert):
//
//   update ledger as l
//   set state = '<to>', <what the step records>, <lease kept or RELEASED>, updated_at = now()
//   [from unnest(<per-key values>) as v(id, ...)]
//   where <heldBy(ctx)> and l.state = '<from>'
//   returning l.id
//
// The parts below are that shape; each transition stays one statement, and
// its state names stay literal in its own function, where
// test/state-machine.test.ts reads them against TRANSITIONS.

/** A claim: the row leased to this worker for `leaseSeconds`, one attempt more. */
const takeLease = (ctx: LedgerContext, leaseSeconds: number) => sql`
    locked_by = ${ctx.me},
    locked_until = now() + make_interval(secs => ${leaseSeconds}),
    attempts = l.attempts + 1,
    updated_at = now()`;

/** Leases up to `limit` rows of `claimable` (a CTE body selecting `id`, locked `for update skip locked`). */
function leaseClaimable<Row>(ctx: LedgerContext, claimable: RawBuilder<unknown>, leaseSeconds: number, returning: RawBuilder<unknown>) {
  return sql<Row>`
    with claimable as ${claimable}
    update ${ledger(ctx)} as l
    set ${takeLease(ctx, leaseSeconds)}
    from claimable
    where l.id = claimable.id
    returning ${returning}
  `.execute(ctx.db);
}

/** The lease ends (the key is claimable again, or settled). */
const RELEASED = sql`locked_by = null, locked_until = null`;

/** The guard of every transition after a claim: the row is still leased to this worker. */
const heldBy = (ctx: Pick<LedgerContext, 'me'>) => sql`l.locked_by = ${ctx.me}`;

/** The rows `ids` (ledger alias `l`). */
const rowsOf = (ids: number[]) => sql`l.id = any(${ids}::bigint[])`;

/** `l.<column>` (an array of table row ids) with `added` merged in: each once, sorted. */
const mergedIds = (column: 'row_ids' | 'rows_updated' | 'rows_reverted', added: RawBuilder<unknown>) =>
  sql`array(select distinct x from unnest(coalesce(l.${sql.id(column)}, '{}') || ${added}) as x order by x)`;

/** When a key that failed `l.<counter>` times may be claimed again: exponential from `backoffSeconds`, at most 5 minutes. */
const backedOff = (counter: 'failures' | 'revert_failures', backoffSeconds: number) =>
  sql`now() + make_interval(secs => least(300, ${backoffSeconds} * power(2, l.${sql.id(counter)})))`;

/** A text value per key, as the table `v(id, <column>)` to join on `l.id = v.id`. */
const perKey = (ids: number[], values: Array<string | null>, column: 'etag' | 'reason' | 'row_ids' | 'error') =>
  sql`unnest(${ids}::bigint[], ${values}::text[]) as v(id, ${sql.id(column)})`;

const idsOf = (result: { rows: Array<{ id: number }> }) => result.rows.map((r) => r.id);

/**
 * Leases up to `limit` claimable rows to `ctx.me`: live, not leased (or the
 * lease expired), not backing off. One statement; the row locks last only
 * for it, and the lease lives in `locked_by`/`locked_until`. One index scan
 * per state asked for (src/ledger/claim-scan.ts), the furthest along first.
 */
export async function claimBatch(
  ctx: LedgerContext,
  limit: number,
  leaseSeconds: number,
  filter: ClaimFilter = {},
): Promise<LedgerRow[]> {
  const states = filter.states ?? LIVE_STATES;
  const claimable = claimableIds(
    ledger(ctx),
    states,
    limit,
    sql`(l.locked_until is null or l.locked_until < now()) and (l.not_before is null or l.not_before <= now())`,
  );
  return (await leaseClaimable<LedgerRow>(ctx, claimable, leaseSeconds, RETURNING)).rows;
}

/** Extends the lease on rows this worker still holds. */
export async function renewLeases(ctx: LedgerContext, ids: number[], leaseSeconds: number): Promise<number> {
  const result = await sql`
    update ${ledger(ctx)} as l
    set locked_until = now() + make_interval(secs => ${leaseSeconds})
    where ${rowsOf(ids)} and ${heldBy(ctx)}
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

/**
 * The heartbeat's renewal: extends the lease on the rows this worker still
 * holds, and counts the rows of `ids` that another worker holds now. A
 * worker that finds any (`lost` > 0) has lost part of its batch: it must do
 * no destructive step for that batch (its keys may be another's now).
 * Rows this worker released itself (locked_by null) are neither.
 */
export async function renewBatchLeases(ctx: LedgerContext, ids: number[], leaseSeconds: number): Promise<{ renewed: number; lost: number }> {
  const result = await sql<{ renewed: number; lost: number }>`
    with renewed as (
      update ${ledger(ctx)} as l
      set locked_until = now() + make_interval(secs => ${leaseSeconds})
      where ${rowsOf(ids)} and ${heldBy(ctx)}
      returning l.id
    )
    select (select count(*) from renewed)::int as renewed,
           (select count(*) from ${ledger(ctx)}
             where id = any(${ids}::bigint[]) and locked_by is not null and locked_by <> ${ctx.me})::int as lost
  `.execute(ctx.db);
  return result.rows[0] ?? { renewed: 0, lost: 0 };
}

/** What the copy step learnt about one key it records as `copied`. */
export interface CopiedKey {
  id: number;
  /** The destination's ETag. */
  dstEtag: string | null;
  /** Whether the destination is this migration's copy (migration 0010-copy-made); unknown when left out. */
  made?: boolean;
  /** The source's ETag as the batch's listing showed it: kept when `plan --list` recorded none. */
  srcEtag?: string | null;
}

/**
 * pending → copied: the destination holds the object. Records whether this
 * migration made it (`copy_made`, read by revert) and, when the plan did not
 * list, the source ETag the copy was pinned to (read by revert's judgement
 * of an original it finds).
 */
export async function markCopied(ctx: LedgerContext, copies: CopiedKey[]): Promise<number[]> {
  if (copies.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = 'copied', dst_etag = v.etag, copy_made = v.made, src_etag = coalesce(l.src_etag, v.src_etag),
        copied_at = now(), updated_at = now()
    from unnest(${copies.map((c) => c.id)}::bigint[], ${copies.map((c) => c.dstEtag)}::text[], ${copies.map((c) => c.made ?? null)}::boolean[],
                ${copies.map((c) => c.srcEtag ?? null)}::text[]) as v(id, etag, made, src_etag)
    where l.id = v.id and ${heldBy(ctx)} and l.state = 'pending'
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/**
 * pending → conflict, missing or archived: terminal, the objects are left alone and
 * the reason is kept. The lease is released.
 */
export async function markUnmovable(
  ctx: LedgerContext,
  state: 'conflict' | 'missing' | 'archived',
  rows: Array<{ id: number; reason: string }>,
): Promise<number[]> {
  if (rows.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = ${state}, last_error = v.reason, ${RELEASED}, updated_at = now()
    from ${perKey(rows.map((r) => r.id), rows.map((r) => r.reason), 'reason')}
    where l.id = v.id and ${heldBy(ctx)} and l.state = 'pending'
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/**
 * copied → db_updated (or superseded), together with the table update, in
 * one statement and so one transaction.
 *
 * Each referencing row (`row_ids`, plus `late_references`: rows written
 * since the plan, recorded by the guard trigger) is updated by primary key
 * with a compare-and-set on its path: a row the application changed since
 * is left alone and recorded in `rows_skipped`. `rows_updated` accumulates
 * across commits (a key re-committed after `requeueNamed` keeps the rows
 * its first commit moved, which `revert` needs). A key none of whose rows
 * ever pointed at it is `superseded`: its copy stays, its source is not
 * deleted.
 */
export async function commitRows(ctx: LedgerContext, ids: number[]): Promise<Array<{ id: number; state: 'db_updated' | 'superseded' }>> {
  if (ids.length === 0) return [];
  const t = appTable(ctx);
  const idCol = sql.id(ctx.idColumn);
  const pathCol = sql.id(ctx.pathColumn);
  const result = await sql<{ id: number; state: 'db_updated' | 'superseded' }>`
    with batch as (
      select l.id, l.src_key, l.dst_key, l.row_ids from ${ledger(ctx)} as l
      where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state = 'copied'
      for update
    ),
    refs as (
      select batch.id as ledger_id, batch.src_key, batch.dst_key, r.row_id
      from batch cross join unnest(batch.row_ids) as r(row_id)
      union
      select batch.id, batch.src_key, batch.dst_key, lr.row_id
      from batch join ${late(ctx)} as lr on lr.ledger_id = batch.id
      union
      select batch.id, batch.src_key, batch.dst_key, lp.row_id
      from batch join ${latePaths(ctx)} as lp on lp.src_key = batch.src_key
    ),
    moved as (
      update ${t} as t
      set ${pathCol} = refs.dst_key
      from refs
      where t.${idCol} = refs.row_id::${sql.raw(ctx.idCast)} and t.${pathCol} = refs.src_key
      returning refs.ledger_id, t.${idCol}::text as row_id
    ),
    -- One row per batch key with the table rows it moved (NULL: none).
    -- Grouping the union keeps this linear in the batch: joining the batch
    -- to an aggregate of moved is planned as a nested loop that
    -- re-aggregates moved for every key (quadratic; 0.4 s at 1,000 keys).
    outcome as (
      select id, array_agg(row_id order by row_id) filter (where row_id is not null) as moved_ids
      from (select ledger_id as id, row_id from moved
            union all
            select id, null from batch) as u
      group by id
    ),
    judged as (
      select l.id,
             cardinality(l.row_ids) = 0 or o.moved_ids is not null or cardinality(coalesce(l.rows_updated, '{}')) > 0 as moved,
             ${mergedIds('rows_updated', sql`coalesce(o.moved_ids, '{}')`)} as all_moved
      from ${ledger(ctx)} as l join outcome as o on o.id = l.id
    )
    update ${ledger(ctx)} as l
    set state = case when j.moved then 'db_updated' else 'superseded' end,
        rows_updated = j.all_moved,
        rows_skipped = array(select x from unnest(l.row_ids) as x where x <> all(j.all_moved)),
        locked_by = case when j.moved then l.locked_by end,
        locked_until = case when j.moved then l.locked_until end,
        db_updated_at = now(),
        updated_at = now()
    from judged as j
    where l.id = j.id
    returning l.id, l.state
  `.execute(ctx.db);
  return result.rows;
}

/**
 * db_updated (or deleting, claimed again) → deleting: the delete fence. Only
 * keys still leased to this worker with more than `marginSeconds` of lease
 * left. From its commit on, the guard trigger rewrites every new write of
 * the key's source path to its destination; the caller then waits out
 * older transactions (`waitForOlderTransactions`) and checks the rows
 * (`findNamingRows`) before any delete.
 */
export async function fenceDeletes(ctx: LedgerContext, ids: number[], marginSeconds: number): Promise<number[]> {
  if (ids.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = 'deleting', updated_at = now()
    where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state in ('db_updated', 'deleting')
      and l.locked_until > now() + make_interval(secs => ${marginSeconds})
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/** A table row that names a ledger key, as {@link findNamingRows} finds it. */
export interface NamingRow {
  ledger_id: number;
  row_id: string;
  path: string;
  /** The row names the key exactly as the ledger spells it (not '/key', s3://, https://). */
  canonical: boolean;
}

/**
 * Read only: the table rows that still name each key's `side` path (its
 * source for execute, its target for revert), in any spelling `key_in`
 * recognises. Candidates are found by primary key (the key's `row_ids`,
 * `rows_updated` and `late_references`) and, with `byIndex`, by an
 * equality lookup of each spelling an index can find (the key, '/' + key,
 * s3://bucket/key). Only keys leased to this worker in `state` count.
 */
export async function findNamingRows(
  ctx: LedgerContext,
  ids: number[],
  state: 'deleting' | 'reverting',
  side: 'source' | 'target',
  byIndex: boolean,
): Promise<NamingRow[]> {
  if (ids.length === 0) return [];
  const loc = ctx.locations?.[side];
  if (!loc) throw new Error('findNamingRows needs ctx.locations');
  const t = appTable(ctx);
  const idCol = sql.id(ctx.idColumn);
  const pathCol = sql.id(ctx.pathColumn);
  const keyCol = side === 'source' ? sql`src_key` : sql`dst_key`;
  const keyIn = sql.id(ctx.schema, 'key_in');
  const indexed = byIndex
    ? sql`
      union
      select b.id, t.${idCol}::text
      from batch as b join ${t} as t
        on t.${pathCol} = any(array[b.key, '/' || b.key, ${`s3://${loc.bucket}/`} || b.key])`
    : sql``;
  const result = await sql<NamingRow>`
    with batch as (
      select l.id, l.src_key, l.${keyCol} as key, l.row_ids || coalesce(l.rows_updated, '{}') as known
      from ${ledger(ctx)} as l
      where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state = ${state}
    ),
    candidates as (
      select b.id, r.row_id from batch as b cross join unnest(b.known) as r(row_id)
      union
      select lr.ledger_id, lr.row_id from ${late(ctx)} as lr where lr.ledger_id in (select id from batch)
      union
      select b.id, lp.row_id from batch as b join ${latePaths(ctx)} as lp on lp.src_key = b.src_key
      ${indexed}
    )
    select c.id as ledger_id, t.${idCol}::text as row_id, t.${pathCol}::text as path, t.${pathCol}::text = b.key as canonical
    from candidates as c
    join batch as b on b.id = c.id
    join ${t} as t on t.${idCol} = c.row_id::${sql.raw(ctx.idCast)}
    where ${keyIn}(t.${pathCol}::text, ${loc.bucket}, ${loc.prefix}) = b.key
    order by 1, 2
  `.execute(ctx.db);
  return result.rows;
}

/**
 * deleting → copied, for keys that rows still name (found by
 * {@link findNamingRows}): the rows join `row_ids` and the worker keeps the
 * lease, so it commits them (`commitRows`) and fences again. Returns the ids
 * taken back.
 */
export async function requeueNamed(ctx: LedgerContext, rows: Array<{ id: number; rowIds: string[] }>): Promise<number[]> {
  if (rows.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = 'copied',
        row_ids = ${mergedIds('row_ids', sql`string_to_array(v.row_ids, ',')`)},
        updated_at = now()
    from ${perKey(rows.map((r) => r.id), rows.map((r) => r.rowIds.join(',')), 'row_ids')}
    where l.id = v.id and ${heldBy(ctx)} and l.state = 'deleting'
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/**
 * Confirms, just before a destructive S3 step, that each key is still leased
 * to this worker, in `state`, with more than `marginSeconds` of its lease
 * left, and renews the lease (`leaseSeconds` from now). Only the keys
 * returned may be deleted (`deleting`, `reverting`) or copied over what is
 * at their destination (`pending` under `--overwrite`); the caller counts
 * its local lease deadline from when it sent this statement.
 */
export async function confirmLeases(
  ctx: LedgerContext,
  ids: number[],
  state: 'pending' | 'deleting' | 'reverting',
  leaseSeconds: number,
  marginSeconds: number,
): Promise<number[]> {
  if (ids.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set locked_until = now() + make_interval(secs => ${leaseSeconds})
    where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state = ${state}
      and l.locked_until > now() + make_interval(secs => ${marginSeconds})
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/**
 * Gives fenced keys back, still `deleting`, when a transaction older than
 * the fence outlived the wait: `note` (which backends) is kept in
 * `last_error` for the operator; the next claim fences and waits again.
 */
export async function releaseFenced(ctx: LedgerContext, ids: number[], note: string): Promise<number> {
  if (ids.length === 0) return 0;
  const result = await sql`
    update ${ledger(ctx)} as l
    set ${RELEASED}, last_error = ${note}, updated_at = now()
    where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state in ('deleting', 'reverting')
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

/** deleting → done: the source is deleted. The lease is released. */
export async function markDone(ctx: LedgerContext, ids: number[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = 'done', done_at = now(), updated_at = now(), ${RELEASED}, last_error = null
    where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state = 'deleting'
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/**
 * `index` guard only, after the delete: rows that name a deleted object
 * (written by a transaction that began after the fence and committed
 * between the check and the delete) are moved to the key's other side,
 * which exists, by compare-and-set, in the spellings an index finds. For
 * `source` (execute) the keys are `done` and rows go to the destination
 * (recorded in `rows_updated`); for `target` (revert) the keys are
 * `reverted` and rows go back to the source (recorded in `rows_reverted`).
 * No state changes; returns the number of rows repaired.
 */
export async function repairAfterDelete(ctx: LedgerContext, ids: number[], side: 'source' | 'target' = 'source'): Promise<number> {
  if (ids.length === 0) return 0;
  const loc = ctx.locations?.[side];
  if (!loc) throw new Error('repairAfterDelete needs ctx.locations');
  const t = appTable(ctx);
  const idCol = sql.id(ctx.idColumn);
  const pathCol = sql.id(ctx.pathColumn);
  const [gone, kept, state, record] =
    side === 'source'
      ? ([sql`src_key`, sql`dst_key`, 'done', 'rows_updated'] as const)
      : ([sql`dst_key`, sql`src_key`, 'reverted', 'rows_reverted'] as const);
  const result = await sql<{ n: number }>`
    with keys as (
      select id, ${gone} as gone, ${kept} as kept from ${ledger(ctx)} where id = any(${ids}::bigint[]) and state = ${state}
    ),
    moved as (
      update ${t} as t
      set ${pathCol} = keys.kept
      from keys
      where t.${pathCol} = any(array[keys.gone, '/' || keys.gone, ${`s3://${loc.bucket}/`} || keys.gone])
      returning keys.id, t.${idCol}::text as row_id
    ),
    recorded as (
      update ${ledger(ctx)} as l
      set ${sql.id(record)} = ${mergedIds(record, sql`m.row_ids`)},
          updated_at = now()
      from (select id, array_agg(row_id) as row_ids from moved group by id) as m
      where l.id = m.id
      returning 1
    )
    select count(*)::int as n from moved
  `.execute(ctx.db);
  return result.rows[0]?.n ?? 0;
}

/**
 * Records a failed step. The row keeps its state and backs off
 * (exponentially, from `backoffSeconds`), or becomes `failed`, remembering
 * where it was, once it has failed `maxFailures` times. The lease is released.
 */
export async function recordFailures(
  ctx: LedgerContext,
  failures: Array<{ id: number; error: string }>,
  maxFailures: number,
  backoffSeconds: number,
): Promise<Array<{ id: number; state: LedgerState }>> {
  if (failures.length === 0) return [];
  const result = await sql<{ id: number; state: LedgerState }>`
    update ${ledger(ctx)} as l
    set failures = l.failures + 1,
        last_error = v.error,
        state = case when l.failures + 1 >= ${maxFailures} then 'failed' else l.state end,
        failed_state = case when l.failures + 1 >= ${maxFailures} then l.state end,
        not_before = ${backedOff('failures', backoffSeconds)},
        ${RELEASED},
        updated_at = now()
    from ${perKey(failures.map((f) => f.id), failures.map((f) => f.error), 'error')}
    where l.id = v.id and ${heldBy(ctx)} and l.state in ('pending', 'copied', 'db_updated', 'deleting')
    returning l.id, l.state
  `.execute(ctx.db);
  return result.rows;
}

/**
 * Seconds a request that a process had already sent when it died may still
 * take to be applied by the server (a DeleteObjects received just before a
 * kill -9). The leases of a gone process end this long after it was found
 * gone, not at once, so that a key is never re-claimed (and, say, its rows
 * moved back by revert) while a delete of its object is still being applied.
 * A gone process sends nothing new.
 */
export const DEAD_PROCESS_GRACE_SECONDS = 10;

/**
 * Ends every lease held by the processes of `runs` (found gone from this
 * host by `findGoneRuns`) {@link DEAD_PROCESS_GRACE_SECONDS} from now,
 * instead of letting them run their full `--lease-seconds`, and marks those
 * runs `lost`. One statement: the runs row is claimed (`running` → `lost`)
 * by whoever gets there first, so two processes that both find the same
 * dead run release its leases once. No state changes: the keys are
 * claimable where they stood, as after an expired lease. Lease owner ids
 * are `<processId>/...`, and a run records its processId.
 *
 * The ledger has no index on `locked_by`, so this reads the whole ledger:
 * it runs only when a gone process is found (once per dead run), never in
 * the steady state. Returns the leases shortened.
 */
export async function releaseDeadLeases(ctx: Pick<LedgerContext, 'db' | 'schema'>, runs: Array<{ id: number; processId: string }>): Promise<number> {
  if (runs.length === 0) return 0;
  const result = await sql`
    with gone as (
      update ${sql.id(ctx.schema, 'runs')}
      set status = 'lost', finished_at = now()
      where id = any(${runs.map((r) => r.id)}::bigint[]) and status = 'running'
      returning process_id
    )
    update ${ledger(ctx)}
    set locked_until = now() + make_interval(secs => ${DEAD_PROCESS_GRACE_SECONDS}), updated_at = now()
    where locked_by is not null and locked_until > now() + make_interval(secs => ${DEAD_PROCESS_GRACE_SECONDS})
      and split_part(locked_by, '/', 1) in (select process_id from gone)
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

/**
 * Gives rows back unchanged (a clean stop, or keys left for a later claim):
 * they are claimable at once. Execute's give-back refunds the claim's
 * attempt (`attempts` counts tries of the forward step); revert's
 * (`refundAttempt` false) does not.
 */
export async function releaseLeases(ctx: LedgerContext, ids: number[], refundAttempt = true): Promise<number> {
  if (ids.length === 0) return 0;
  const result = await sql`
    update ${ledger(ctx)} as l
    set ${RELEASED}, attempts = case when ${refundAttempt} then greatest(l.attempts - 1, 0) else l.attempts end, updated_at = now()
    where ${rowsOf(ids)} and ${heldBy(ctx)}
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

/**
 * failed → the state it failed in, with a fresh failure budget
 * (`execute --retry-failed`). Archived keys go back to pending too: once
 * restored they can be copied, and one not restored yet only costs one
 * refused copy. A key that `revert` gave up on while `reverting` (its rows
 * back on the source, its target kept: a row names the target in another
 * spelling) goes to `pending`, not back to `reverting`, which only revert
 * claims: execute's retry moves it forward, and the copy step first judges
 * the target that is there against the source.
 */
export async function requeueFailed(ctx: Pick<LedgerContext, 'db' | 'schema'>): Promise<number> {
  const result = await sql`
    update ${ledger(ctx)}
    set state = case when failed_state in ('copied', 'db_updated', 'deleting', 'done') then failed_state else 'pending' end,
        failed_state = null, failures = 0,
        not_before = null, ${RELEASED}, updated_at = now()
    where state in ('failed', 'archived')
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

/**
 * superseded → db_updated (`execute --finish-superseded`): a key whose rows
 * all went elsewhere before its commit keeps its source and its copy. Put
 * back in `db_updated`, it takes the path of a key committed by an earlier
 * run: the next claim HEADs its target and refuses the delete unless it is
 * still the copy made (`verifyTargets`), fences it, waits out older
 * transactions, moves any row that names the source by then onto the copy
 * (`findNamingRows`, `requeueNamed`), and only then deletes the source. The
 * source is what goes, not the copy: the migration's end state is an empty
 * source prefix, and deleting a source is what the delete guard protects
 * (no guard watches rows that name the target prefix for execute).
 * Unleased keys only; one statement.
 */
export async function finishSuperseded(ctx: Pick<LedgerContext, 'db' | 'schema'>): Promise<number> {
  const result = await sql`
    update ${ledger(ctx)}
    set state = 'db_updated', failures = 0, not_before = null, ${RELEASED}, updated_at = now()
    where state = 'superseded'
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

// ---------------------------------------------------------------------------
// plan: keys are born here

/** What one plan added to the ledger (see `snapshotTable`). */
export interface PlannedKeys {
  /** New keys. */
  added: number;
  /** Existing keys that gained referencing ids. */
  extended: number;
  /** Of the new keys, those refused at once (control characters, too long). */
  refused: number;
}

/**
 * new → pending (or failed, when S3 cannot take the key: `refusal` is set),
 * and, for a known key that a row names again, done | superseded → pending,
 * so that the row is moved too. "Names again" is any row under the source
 * prefix, not only a new id: a row the ledger already knows may have been
 * pointed elsewhere (the key ended `superseded`) and then back. `pending`,
 * not `copied`: the copy step judges the existing copy against the source as
 * it is now (a superseded source may since hold new bytes: then the key is a
 * `conflict` and the row keeps its source, rather than being moved onto a
 * stale copy whose source would then be deleted); an unchanged source, or a
 * deleted one whose copy carries its provenance, costs HEADs, not a copy.
 * Other known keys only gain the ids. One statement.
 *
 * `judged` defines the CTE `judged(src_key, dst_key, row_ids, refusal)` (one
 * row per distinct key, sorted by key; see snapshot.ts). Only keys that are
 * new or gained ids reach the upsert: a re-plan of an unchanged table is one
 * hash join, not a speculative insertion per key.
 */
export async function insertPlannedKeys(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  judged: RawBuilder<unknown>,
  runId: number,
): Promise<PlannedKeys> {
  const result = await sql<PlannedKeys>`
    with ${judged},
    changed as (
      select judged.* from judged left join ${ledger(ctx)} as known on known.src_key = judged.src_key
      where known.id is null or not (judged.row_ids <@ known.row_ids) or known.state in ('done', 'superseded')
    ),
    upserted as (
      insert into ${ledger(ctx)} as l (src_key, dst_key, row_ids, planned_run_id, state, last_error, failed_state)
      select src_key, dst_key, row_ids, ${runId},
             case when refusal is null then 'pending' else 'failed' end, refusal,
             case when refusal is null then null else 'pending' end
      from changed
      order by src_key
      on conflict (src_key) do update
        set row_ids = array(select distinct x from unnest(l.row_ids || excluded.row_ids) as x order by x),
            state = case when l.state in ('done', 'superseded') then 'pending' else l.state end,
            updated_at = now()
        where not (excluded.row_ids <@ l.row_ids) or l.state in ('done', 'superseded')
      returning (xmax = 0) as inserted, l.state
    )
    select count(*) filter (where inserted)::int as added,
           count(*) filter (where not inserted)::int as extended,
           count(*) filter (where inserted and state = 'failed')::int as refused
    from upserted
  `.execute(ctx.db);
  return result.rows[0]!;
}

/**
 * new → pending (or failed, with the refusal kept) for the first plan of an
 * empty ledger: the two halves of a COPY streamed between two connections
 * (see snapshot.ts `bulkLoad`). `source` reads the judged keys in ledger
 * column order (COPY takes no bind parameters, so `judged` and `runId` must
 * be inlined literals); `sink` writes them into the ledger.
 */
export function bulkLoadQuery(
  ctx: Pick<LedgerContext, 'schema'>,
  judged: RawBuilder<unknown>,
  runId: number,
  freeze: boolean,
): { source: RawBuilder<unknown>; sink: RawBuilder<unknown> } {
  if (!Number.isSafeInteger(runId)) throw new Error(`bad run id ${runId}`);
  return {
    source: sql`
      copy (
        with ${judged}
        select src_key, dst_key, row_ids, ${sql.raw(String(runId))},
               case when refusal is null then 'pending' else 'failed' end, refusal,
               case when refusal is null then null else 'pending' end
        from judged
        order by src_key
      ) to stdout
    `,
    sink: sql`copy ${ledger(ctx)} (src_key, dst_key, row_ids, planned_run_id, state, last_error, failed_state) from stdin${
      freeze ? sql` with (freeze)` : sql``
    }`,
  };
}

/** One page of a listing of the source prefix (`plan --list`). */
export interface ListedPage {
  keys: string[];
  sizes: Array<number | null>;
  etags: Array<string | null>;
  storageClasses: string[];
}

/**
 * Records what a listing page says about each key (size, ETag, storage
 * class, the listing run), and, with `orphans` `move`, new → pending for
 * listed objects no row references (keys with no ids). One statement.
 * Returns the orphans inserted and the known keys seen.
 */
export async function recordListedPage(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  page: ListedPage,
  listing: { rules: RefusalRules; orphans: 'move' | 'skip'; runId: number },
): Promise<{ inserted: number; seen: number }> {
  const { rules } = listing;
  const counts = await sql<{ inserted: number; seen: number }>`
    with listed as (
      select * from unnest(${page.keys}::text[], ${page.sizes}::bigint[], ${page.etags}::text[], ${page.storageClasses}::text[])
        as v(src_key, size, etag, storage_class)
    ),
    known as (
      update ${ledger(ctx)} as l
      set src_size = listed.size, src_etag = listed.etag, src_storage_class = listed.storage_class,
          listed_run_id = ${listing.runId}, updated_at = now()
      from listed where l.src_key = listed.src_key
      returning l.src_key
    ),
    orphans as (
      -- Orphans pass the same refusals as planned keys (key-refusal.ts).
      insert into ${ledger(ctx)} (src_key, dst_key, row_ids, src_size, src_etag, src_storage_class, listed_run_id, planned_run_id,
                                  state, last_error, failed_state)
      select judged.src_key, judged.dst_key, '{}', judged.size, judged.etag, judged.storage_class, ${listing.runId}, ${listing.runId},
             case when judged.refusal is null then 'pending' else 'failed' end, judged.refusal,
             case when judged.refusal is null then null else 'pending' end
      from (select listed.*, ${destinationKey(sql`listed.src_key`, rules)} as dst_key, ${keyRefusal(sql`listed.src_key`, rules)} as refusal
            from listed) as judged
      where ${listing.orphans === 'move'} and not exists (select 1 from ${ledger(ctx)} as l where l.src_key = judged.src_key)
      on conflict (src_key) do nothing
      returning src_key
    )
    select (select count(*) from orphans)::int as inserted, (select count(*) from known)::int as seen
  `.execute(ctx.db);
  return counts.rows[0]!;
}

/**
 * pending → missing for keys a full listing (`plan --list`, run `runId`) did
 * not find. Keys already copied are not touched: their source is gone by
 * design once they reach db_updated.
 */
export async function markUnlistedMissing(ctx: Pick<LedgerContext, 'db' | 'schema'>, runId: number): Promise<number> {
  const result = await sql`
    update ${ledger(ctx)}
    set state = 'missing', last_error = 'not found in the source listing', updated_at = now()
    where state = 'pending' and listed_run_id is distinct from ${runId} and locked_by is null
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

// ---------------------------------------------------------------------------
// Staged cutover

/** The `last_error` prefix of a key whose source delete was refused. */
export const DELETE_REFUSED = 'delete refused';

/**
 * Parks committed keys in `db_updated` (`--keep-source`): the lease is
 * released so that a `--delete-only` run can claim them at once instead of
 * waiting for it to expire.
 */
export async function parkDbUpdated(ctx: LedgerContext, ids: number[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set ${RELEASED}, updated_at = now()
    where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state = 'db_updated'
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/**
 * db_updated (or deleting) → failed, at once and without retries: the
 * target is gone or not the object that was copied, so deleting the source
 * would leave the rows naming nothing (or the wrong bytes); or a row names
 * the source in another spelling (a leading '/', a URL), which the
 * compare-and-set commit does not rewrite. The source is kept; the reason
 * is in `last_error` (prefixed {@link DELETE_REFUSED}) and `failed_state` is
 * `db_updated`, so `execute --retry-failed` re-checks it once the target is
 * repaired, and `revert` can move the rows back to the intact source.
 */
export async function refuseDelete(ctx: LedgerContext, rows: Array<{ id: number; reason: string }>): Promise<number[]> {
  if (rows.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = 'failed', failed_state = 'db_updated', failures = l.failures + 1,
        last_error = ${DELETE_REFUSED} || ': ' || v.reason,
        ${RELEASED}, updated_at = now()
    from ${perKey(rows.map((r) => r.id), rows.map((r) => r.reason), 'reason')}
    where l.id = v.id and ${heldBy(ctx)} and l.state in ('db_updated', 'deleting')
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/** Keys whose source delete was refused, for the end-of-run report. */
export async function listRefusedDeletes(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  limit = 100,
): Promise<{ total: number; rows: Array<{ src_key: string; dst_key: string; last_error: string }> }> {
  const rows = await sql<{ src_key: string; dst_key: string; last_error: string; total: string }>`
    select src_key, dst_key, last_error, count(*) over () as total
    from ${ledger(ctx)}
    where state = 'failed' and last_error like ${`${DELETE_REFUSED}:%`}
    order by id
    limit ${limit}
  `.execute(ctx.db);
  return { total: Number(rows.rows[0]?.total ?? 0), rows: rows.rows };
}

// ---------------------------------------------------------------------------
// revert: each transition one statement, every one after the claim guarded by
// `locked_by = me`, like the forward ones.

/** A key as revert sees it. */
export interface RevertRow {
  id: number;
  src_key: string;
  dst_key: string;
  state: 'db_updated' | 'deleting' | 'done' | 'reverting' | 'failed';
  src_size: number | null;
  src_etag: string | null;
  src_storage_class: string | null;
  dst_etag: string | null;
  /** Whether this migration made the target (migration 0010-copy-made); null: recorded before it. */
  copy_made: boolean | null;
}

/** Rows revert may take: moved (or part-way back), and not given up on. */
const revertable = (maxFailures: number) => sql`
  (state in ('db_updated', 'deleting', 'done', 'reverting') or (state = 'failed' and failed_state in ('db_updated', 'deleting')))
  and revert_failures < ${maxFailures}`;

/**
 * Builds the index revert claims by, once: the forward claim's partial index
 * does not cover `done`, and a scan of the primary key would wade through
 * every key already reverted. Built here rather than in a migration so that
 * a migration that is never reverted does not maintain it.
 */
export async function ensureRevertIndex(ctx: Pick<LedgerContext, 'db' | 'schema'>): Promise<void> {
  await sql`
    create index if not exists migration_ledger_revertable_v2 on ${ledger(ctx)} (id)
    where state in ('db_updated', 'deleting', 'done', 'reverting', 'failed')
  `.execute(ctx.db);
}

/** Leases up to `limit` revertable keys to `ctx.me` (one statement, like `claimBatch`). */
export async function claimRevert(
  ctx: LedgerContext,
  limit: number,
  leaseSeconds: number,
  maxFailures: number,
  /** Only keys already half-way back (`reverting`): how a run finishes what it started. */
  onlyReverting = false,
): Promise<RevertRow[]> {
  const claimable = sql`(
      select id from ${ledger(ctx)}
      where state in ('db_updated', 'deleting', 'done', 'reverting', 'failed') and ${revertable(maxFailures)}
        and (${!onlyReverting} or state = 'reverting')
        and (locked_until is null or locked_until < now())
        and (not_before is null or not_before <= now())
      order by id
      limit ${limit}
      for update skip locked
    )`;
  const returning = sql`l.id, l.src_key, l.dst_key, l.state, l.src_size, l.src_etag, l.src_storage_class, l.dst_etag, l.copy_made`;
  return (await leaseClaimable<RevertRow>(ctx, claimable, leaseSeconds, returning)).rows;
}

/** Whether any key is still to revert (leased elsewhere, or backing off). */
export async function hasRevertable(ctx: Pick<LedgerContext, 'db' | 'schema'>, maxFailures: number): Promise<boolean> {
  const result = await sql<{ left: boolean }>`
    select exists (select 1 from ${ledger(ctx)}
                   where state in ('db_updated', 'deleting', 'done', 'reverting', 'failed') and ${revertable(maxFailures)}) as left
  `.execute(ctx.db);
  return result.rows[0]?.left === true;
}

/**
 * Moves the rows of each key back to its source key, together with the
 * ledger change, in one statement and so one transaction. Each row that
 * execute moved (`rows_updated`) is updated by primary key with a
 * compare-and-set on the target path: a row the application changed since
 * is left alone. A key whose target copy must go (`deleteTarget`: the source
 * had been deleted, so the target is a copy we made) becomes `reverting`
 * and keeps its lease; the others are `reverted`, their target copy left in
 * place (it is the object the source was copied to, never read again).
 */
export async function revertRows(
  ctx: LedgerContext,
  keys: Array<{ id: number; deleteTarget: boolean }>,
): Promise<Array<{ id: number; state: 'reverting' | 'reverted' }>> {
  if (keys.length === 0) return [];
  const t = appTable(ctx);
  const idCol = sql.id(ctx.idColumn);
  const pathCol = sql.id(ctx.pathColumn);
  const result = await sql<{ id: number; state: 'reverting' | 'reverted' }>`
    with batch as (
      select l.id, l.src_key, l.dst_key, coalesce(l.rows_updated, '{}') as rows_updated, v.del
      from ${ledger(ctx)} as l
      join unnest(${keys.map((k) => k.id)}::bigint[], ${keys.map((k) => k.deleteTarget)}::boolean[]) as v(id, del) on v.id = l.id
      where ${heldBy(ctx)}
        and (l.state in ('db_updated', 'deleting', 'done') or (l.state = 'failed' and l.failed_state in ('db_updated', 'deleting')))
      for update of l
    ),
    refs as (
      select batch.id as ledger_id, batch.src_key, batch.dst_key, r.row_id
      from batch cross join unnest(batch.rows_updated) as r(row_id)
    ),
    moved as (
      update ${t} as t
      set ${pathCol} = refs.src_key
      from refs
      where t.${idCol} = refs.row_id::${sql.raw(ctx.idCast)} and t.${pathCol} = refs.dst_key
      returning refs.ledger_id, t.${idCol}::text as row_id
    ),
    -- Linear in the batch, as in commitRows.
    outcome as (
      select id, bool_or(del) as del,
             array_agg(row_id order by row_id) filter (where row_id is not null) as moved_ids
      from (select ledger_id as id, row_id, null::boolean as del from moved
            union all
            select id, null, del from batch) as u
      group by id
    )
    update ${ledger(ctx)} as l
    set state = case when o.del then 'reverting' else 'reverted' end,
        rows_reverted = ${mergedIds('rows_reverted', sql`coalesce(o.moved_ids, '{}')`)},
        failed_state = null,
        last_error = null,
        reverted_at = case when o.del then null else now() end,
        locked_by = case when o.del then l.locked_by end,
        locked_until = case when o.del then l.locked_until end,
        updated_at = now()
    from outcome as o
    where l.id = o.id
    returning l.id, l.state
  `.execute(ctx.db);
  return result.rows;
}

/**
 * reverting → reverting: rows that still name the target (found by
 * `findNamingRows` after the fence: rows the application wrote with the
 * target path after cutover) are moved back to the source key, which
 * exists, by primary key with a compare-and-set on the target path, and
 * recorded in `rows_reverted`. Returns the rows moved.
 */
export async function revertNamed(ctx: LedgerContext, rows: Array<{ id: number; rowIds: string[] }>): Promise<number> {
  if (rows.length === 0) return 0;
  const t = appTable(ctx);
  const idCol = sql.id(ctx.idColumn);
  const pathCol = sql.id(ctx.pathColumn);
  const result = await sql<{ n: number }>`
    with batch as (
      select l.id, l.src_key, l.dst_key, string_to_array(v.row_ids, ',') as row_ids
      from ${ledger(ctx)} as l
      join ${perKey(rows.map((r) => r.id), rows.map((r) => r.rowIds.join(',')), 'row_ids')} on v.id = l.id
      where ${heldBy(ctx)} and l.state = 'reverting'
      for update of l
    ),
    moved as (
      update ${t} as t
      set ${pathCol} = batch.src_key
      from batch cross join unnest(batch.row_ids) as r(row_id)
      where t.${idCol} = r.row_id::${sql.raw(ctx.idCast)} and t.${pathCol} = batch.dst_key
      returning batch.id, t.${idCol}::text as row_id
    ),
    recorded as (
      update ${ledger(ctx)} as l
      set rows_reverted = ${mergedIds('rows_reverted', sql`m.row_ids`)},
          updated_at = now()
      from (select id, array_agg(row_id) as row_ids from moved group by id) as m
      where l.id = m.id
      returning 1
    )
    select count(*)::int as n from moved
  `.execute(ctx.db);
  return result.rows[0]?.n ?? 0;
}

/**
 * reverting → reverted: the target copy is deleted, or kept for the reason
 * given as `note` (kept in `last_error`, for the audit). The lease is
 * released.
 */
export async function markReverted(ctx: LedgerContext, ids: number[], note: string | null = null): Promise<number[]> {
  if (ids.length === 0) return [];
  const result = await sql<{ id: number }>`
    update ${ledger(ctx)} as l
    set state = 'reverted', reverted_at = now(), updated_at = now(), ${RELEASED}, last_error = ${note}
    where ${rowsOf(ids)} and ${heldBy(ctx)} and l.state = 'reverting'
    returning l.id
  `.execute(ctx.db);
  return idsOf(result);
}

/**
 * Records failed revert steps on revert's own budget. A key backs off, or,
 * after `maxFailures` (1: at once, for refusals), becomes `failed`
 * remembering its state, and revert stops claiming it. The lease is released.
 */
export async function recordRevertFailures(
  ctx: LedgerContext,
  failures: Array<{ id: number; error: string }>,
  maxFailures: number,
  backoffSeconds: number,
): Promise<Array<{ id: number; state: string }>> {
  if (failures.length === 0) return [];
  const result = await sql<{ id: number; state: string }>`
    update ${ledger(ctx)} as l
    set revert_failures = case when l.revert_failures + 1 >= ${maxFailures} then greatest(${maxFailures}, l.revert_failures + 1)
                               else l.revert_failures + 1 end,
        last_error = 'revert: ' || v.error,
        state = case when l.revert_failures + 1 >= ${maxFailures} then 'failed' else l.state end,
        failed_state = case when l.revert_failures + 1 >= ${maxFailures} and l.state <> 'failed' then l.state else l.failed_state end,
        not_before = ${backedOff('revert_failures', backoffSeconds)},
        ${RELEASED},
        updated_at = now()
    from ${perKey(failures.map((f) => f.id), failures.map((f) => f.error), 'error')}
    where l.id = v.id and ${heldBy(ctx)}
    returning l.id, l.state
  `.execute(ctx.db);
  return result.rows;
}

/** Gives revert's keys back unchanged (a clean stop): {@link releaseLeases} without the attempt refund. */
export async function releaseRevertLeases(ctx: LedgerContext, ids: number[]): Promise<void> {
  await releaseLeases(ctx, ids, false);
}

/** `revert --retry-failed`: keys revert gave up on get a fresh budget, back in the state they failed in. */
export async function requeueRevertFailed(ctx: Pick<LedgerContext, 'db' | 'schema'>): Promise<number> {
  const result = await sql`
    update ${ledger(ctx)}
    set state = case when state = 'failed' then coalesce(failed_state, state) else state end,
        failed_state = case when state = 'failed' and failed_state = 'db_updated' then failed_state end,
        revert_failures = 0, not_before = null, updated_at = now()
    where revert_failures > 0
  `.execute(ctx.db);
  return Number(result.numAffectedRows ?? 0);
}

/**
 * Keys revert gave up on, for the end-of-run report and exit code: failed,
 * and failed last by revert (its errors start `revert: `). Not by the count
 * of revert failures alone: a key given up on at once (a row naming its
 * target in another spelling) fails after one.
 */
export async function listRevertFailed(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  limit = 100,
): Promise<{ total: number; rows: Array<{ src_key: string; dst_key: string; last_error: string | null }> }> {
  const rows = await sql<{ src_key: string; dst_key: string; last_error: string | null; total: string }>`
    select src_key, dst_key, last_error, count(*) over () as total
    from ${ledger(ctx)}
    where state = 'failed' and revert_failures > 0 and last_error like 'revert: %'
    order by id
    limit ${limit}
  `.execute(ctx.db);
  return { total: Number(rows.rows[0]?.total ?? 0), rows: rows.rows };
}
