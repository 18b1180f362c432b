import { withDbRetry } from '../db/retry.js';
import { FatalError } from '../errors.js';
import { judgeOriginal } from '../copy/judge-original.js';
import { copyObject } from '../copy/copy-object.js';
import { namesSource, readProvenance } from '../copy/provenance.js';
import { deleteObjects } from '../copy/delete-objects.js';
import type { WorkerS3 } from '../copy/copy-config.js';
import { classifyS3Error, describeS3Error } from '../s3/errors.js';
import { headIfExists } from '../s3/head-object.js';
import {
  confirmLeases,
  findNamingRows,
  markReverted,
  recordRevertFailures,
  releaseFenced,
  releaseRevertLeases,
  repairAfterDelete,
  revertNamed,
  revertRows,
  type LedgerContext,
  type LedgerRow,
  type RevertRow,
} from '../ledger/state-machine.js';
import type { LeaseClock } from '../ledger/lease-fence.js';
import { fenceWaitMs, waitForOlderTransactions } from '../guard/guard.js';

/** What one revert batch did, for the run's totals. */
export interface RevertTally {
  rowsOnly: number;
  copiedBack: number;
  reverted: number;
  failed: number;
  /** Rows the application wrote with the target path after cutover, moved back before the target was deleted. */
  rowsMovedBackLate: number;
  /** Index guard: rows moved back after their target was deleted (its remaining window). */
  repaired: number;
  /** Targets not made by this migration (no provenance naming the source), kept. */
  targetsKept: number;
}

/** The note a key reverted with its target kept carries (`last_error`). */
export const TARGET_NOT_OURS =
  'target kept: this migration did not make it (execute found the same object there and copied nothing: the ledger\'s copy_made is false, or the target carries no provenance naming this source), and rows the tool never saw may name it';

/** A revert worker's view: the ledger, the S3 side of `execute` with source and target swapped, and its budget. */
export interface RevertContext {
  ledger: LedgerContext;
  /** Its config names the migration's target as `source` and vice versa: a copy back is a copy. */
  back: WorkerS3;
  maxAttempts: number;
  backoffSeconds: number;
}

type Step = { kind: 'rows'; id: number; deleteTarget: boolean } | { kind: 'fail'; id: number; error: string; terminal: boolean };

/**
 * Reverts one claimed batch: for each key, make sure its source exists (copy
 * it back from the target when it does not), then move the rows back (one
 * statement for the batch), then delete the target copies that are ours to
 * delete. A key picks up at the state it was claimed in, so a revert killed
 * at any point resumes exactly.
 */
export async function revertBatch(ctx: RevertContext, rows: RevertRow[], tally: RevertTally, lease: LeaseClock): Promise<void> {
  const { ledger } = ctx;
  const fail = async (failures: Array<{ id: number; error: string }>, max: number) => {
    if (failures.length === 0) return;
    const result = await withDbRetry(() => recordRevertFailures(ledger, failures, max, ctx.backoffSeconds));
    tally.failed += result.filter((r) => r.state === 'failed').length;
  };

  // 1. The source exists, or is copied back.
  const steps = await Promise.all(rows.filter((r) => r.state !== 'reverting').map((row) => ensureSource(ctx, row)));
  const fatal = steps.find((s): s is Extract<Step, { kind: 'fail' }> => s.kind === 'fail' && s.error.startsWith('fatal: '));
  const failures = steps.filter((s): s is Extract<Step, { kind: 'fail' }> => s.kind === 'fail');
  await fail(failures.filter((f) => !f.terminal).map((f) => ({ id: f.id, error: f.error })), ctx.maxAttempts);
  await fail(failures.filter((f) => f.terminal).map((f) => ({ id: f.id, error: f.error })), 1);
  if (fatal) throw new FatalError(`revert: ${fatal.error.slice('fatal: '.length)}`);

  // 2. Rows back to the source key, with the ledger change, in one statement.
  const toRevert = steps.filter((s): s is Extract<Step, { kind: 'rows' }> => s.kind === 'rows');
  tally.copiedBack += toRevert.filter((s) => s.deleteTarget).length;
  const moved = await withDbRetry(() => revertRows(ledger, toRevert.map((s) => ({ id: s.id, deleteTarget: s.deleteTarget }))));
  tally.rowsOnly += moved.filter((m) => m.state === 'reverted').length;
  tally.reverted += moved.filter((m) => m.state === 'reverted').length;

  // 3. Delete the target copies no row names any more. The commit above
  // (state reverting) is the fence: from it on, the guard trigger rewrites
  // a write of the target path to the source. Every transaction older than
  // it is waited out, then every row that could name the target is looked
  // at and moved back (or the target is kept).
  const byId = new Map(rows.map((r) => [r.id, r]));
  const fenced = [...rows.filter((r) => r.state === 'reverting').map((r) => r.id), ...moved.filter((m) => m.state === 'reverting').map((m) => m.id)];
  const cleared = await checkTargets(ctx, fenced, lease, tally);
  if (lease.lost || cleared.length === 0) {
    await withDbRetry(() => releaseRevertLeases(ledger, cleared));
    return;
  }
  // Only a target this migration made is deleted. One without this
  // source's provenance was there before the copy (execute judged it the
  // same object and copied nothing), and rows the tool never saw may name
  // it (written before the plan: neither rows_updated nor the guard knows
  // them). It is kept, and the key reverted all the same: its rows are back
  // on the source, which exists.
  const owned = await targetsMadeHere(ctx, cleared.map((id) => byId.get(id)!));
  if (owned.fatal) throw new FatalError(owned.fatal);
  await fail(owned.failed, ctx.maxAttempts);
  const kept = await withDbRetry(() => markReverted(ledger, owned.kept, TARGET_NOT_OURS));
  tally.reverted += kept.length;
  tally.targetsKept += kept.length;
  if (owned.own.length === 0) return;
  const sentAt = Date.now();
  const confirmed = new Set(await withDbRetry(() => confirmLeases(ledger, owned.own, 'reverting', lease.leaseSeconds, lease.marginSeconds)));
  lease.renewedAt(sentAt);
  // A key not confirmed is given back at once, still `reverting`. Left
  // leased to this worker, it could not be claimed until its lease ran out:
  // a revert ending meanwhile (its --limit reached, or its last pass
  // finding nothing claimable) left it half-way back with nothing to
  // finish it. Soak seed 5018 ended with 8 such keys.
  await withDbRetry(() => releaseRevertLeases(ledger, lease.release(owned.own.filter((id) => !confirmed.has(id)))));
  const toDelete = owned.own.filter((id) => confirmed.has(id)).map((id) => byId.get(id)!);
  // The copy back's `source` bucket is the migration's target.
  const deleted = await deleteObjects(ctx.back, ctx.back.config.migrate.source.bucket, toDelete.map((r) => ({ id: r.id, key: r.dst_key })), lease, 'delete target');
  const reverted = await withDbRetry(() => markReverted(ledger, deleted.deleted));
  tally.reverted += reverted.length;
  if (ledger.guard === 'index' && reverted.length > 0) tally.repaired += await withDbRetry(() => repairAfterDelete(ledger, reverted, 'target'));
  await withDbRetry(() => releaseRevertLeases(ledger, deleted.skipped));
  await fail(deleted.failed, ctx.maxAttempts);
  if (deleted.fatal) throw new FatalError(deleted.fatal);
}

/**
 * Splits the keys whose targets are about to be deleted into those this
 * migration made and those it did not. The ledger says so (`copy_made`,
 * migration 0010-copy-made), with no request; a key recorded before that
 * migration takes one HEAD: the target is ours when it carries provenance
 * naming the key's source (src/copy/provenance.ts), or is already gone.
 */
async function targetsMadeHere(
  ctx: RevertContext,
  rows: RevertRow[],
): Promise<{ own: number[]; kept: number[]; failed: Array<{ id: number; error: string }>; fatal?: string }> {
  // The copy back runs the other way round: its `source` is the migration's target.
  const targetBucket = ctx.back.config.migrate.source.bucket;
  const sourceBucket = ctx.back.config.migrate.target.bucket;
  const result: { own: number[]; kept: number[]; failed: Array<{ id: number; error: string }>; fatal?: string } = { own: [], kept: [], failed: [] };
  await Promise.all(
    rows.map(async (row) => {
      if (row.copy_made != null) {
        (row.copy_made ? result.own : result.kept).push(row.id);
        return;
      }
      try {
        const head = await headIfExists(ctx.back, targetBucket, row.dst_key);
        if (!head || namesSource(readProvenance(head.Metadata), { bucket: sourceBucket, key: row.src_key })) result.own.push(row.id);
        else result.kept.push(row.id);
      } catch (err) {
        const error = `check target: ${describeS3Error(err)}`;
        if (classifyS3Error(err) === 'fatal') result.fatal = error;
        result.failed.push({ id: row.id, error });
      }
    }),
  );
  return result;
}

/**
 * Waits out every transaction older than the fence (keys in `reverting`),
 * then finds every row that still names each target: rows the application
 * wrote with the target path after cutover, found by id (`rows_updated`,
 * `late_references`) or, with the index guard, by path. Rows naming it
 * exactly are moved back to the source by compare-and-set (up to three
 * rounds); a row naming it in another spelling keeps the target (the key
 * is given up on, with the row named). Returns the keys whose targets may
 * be deleted.
 */
async function checkTargets(ctx: RevertContext, ids: number[], lease: LeaseClock, tally: RevertTally): Promise<number[]> {
  const { ledger } = ctx;
  let left = ids;
  for (let round = 1; left.length > 0 && !lease.lost; round++) {
    const wait = await withDbRetry(() => waitForOlderTransactions(ledger.db, fenceWaitMs(lease.leaseSeconds)));
    if (!wait.complete) {
      const note = `waiting for transactions older than the revert fence to end (pids ${(wait.blockers ?? []).join(', ')}); retried at the next claim`;
      await withDbRetry(() => releaseFenced(ledger, left, note));
      return [];
    }
    const named = await withDbRetry(() => findNamingRows(ledger, left, 'reverting', 'target', ledger.guard === 'index'));
    if (named.length === 0) return left;
    const spelled = new Map<number, string>();
    const exact = new Map<number, string[]>();
    for (const row of named) {
      if (!row.canonical) spelled.set(row.ledger_id, `row ${row.row_id} names the target as ${JSON.stringify(row.path)}: target kept`);
      else exact.set(row.ledger_id, [...(exact.get(row.ledger_id) ?? []), row.row_id]);
    }
    const given = await withDbRetry(() => recordRevertFailures(ledger, [...spelled].map(([id, error]) => ({ id, error })), 1, ctx.backoffSeconds));
    tally.failed += given.filter((r) => r.state === 'failed').length;
    const back = [...exact].filter(([id]) => !spelled.has(id)).map(([id, rowIds]) => ({ id, rowIds }));
    tally.rowsMovedBackLate += await withDbRetry(() => revertNamed(ledger, back));
    left = left.filter((id) => !spelled.has(id));
    if (round === 3) {
      const busy = left.filter((id) => exact.has(id));
      await withDbRetry(() => releaseRevertLeases(ledger, busy));
      return left.filter((id) => !exact.has(id));
    }
  }
  return left;
}

/**
 * Whether the rows may go back to the source key now, and whether the
 * target copy is then ours to delete: it is when the source had been
 * deleted (`done`) or is missing and copied back here.
 */
async function ensureSource(ctx: RevertContext, row: RevertRow): Promise<Step> {
  const bucket = ctx.back.config.migrate.target.bucket;
  try {
    const head = await headIfExists(ctx.back, bucket, row.src_key);
    if (head) {
      const verdict = await judgeOriginal(ctx.back, { bucket, key: row.src_key }, head, { bucket: ctx.back.config.migrate.source.bucket, key: row.dst_key }, { size: row.src_size, etag: row.src_etag });
      if (!verdict.same) return { kind: 'fail', id: row.id, terminal: true, error: `source s3://${bucket}/${row.src_key} ${verdict.reason}: rows left on the target` };
      return { kind: 'rows', id: row.id, deleteTarget: row.state === 'done' };
    }
  } catch (err) {
    const kind = classifyS3Error(err);
    return { kind: 'fail', id: row.id, terminal: false, error: `${kind === 'fatal' ? 'fatal: ' : ''}check source: ${describeS3Error(err)}` };
  }
  // The source is gone: copy the target back, with execute's own copy (same
  // checks, same fidelity), the ledger row seen from the other side.
  const reversed: LedgerRow = {
    id: row.id,
    src_key: row.dst_key,
    dst_key: row.src_key,
    row_ids: [],
    state: 'pending',
    attempts: 0,
    failures: 0,
    src_size: row.src_size,
    src_etag: row.dst_etag,
    src_storage_class: row.src_storage_class,
    dst_etag: null,
  };
  const outcome = await copyObject(ctx.back, reversed);
  switch (outcome.kind) {
    case 'copied':
      return { kind: 'rows', id: row.id, deleteTarget: true };
    case 'missing':
      return { kind: 'fail', id: row.id, terminal: true, error: `neither the source nor the target copy exists (${outcome.reason})` };
    case 'conflict':
      return { kind: 'fail', id: row.id, terminal: true, error: `copy back refused: ${outcome.reason}` };
    case 'fatal':
      return { kind: 'fail', id: row.id, terminal: false, error: `fatal: ${outcome.error}` };
    case 'failed':
      return { kind: 'fail', id: row.id, terminal: outcome.terminal === true, error: `copy back: ${outcome.error}` };
    default:
      return { kind: 'fail', id: row.id, terminal: true, error: `copy back: ${JSON.stringify(outcome)}` };
  }
}
