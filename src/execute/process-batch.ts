import { FatalError } from '../errors.js';
import { withDbRetry } from '../db/retry.js';
import {
  commitRows,
  markCopied,
  markDone,
  markUnmovable,
  parkDbUpdated,
  recordFailures,
  refuseDelete,
  releaseFenced,
  releaseLeases,
  renewBatchLeases,
  confirmLeases,
  fenceDeletes,
  findNamingRows,
  repairAfterDelete,
  requeueNamed,
  type LedgerContext,
  type LedgerRow,
  type NamingRow,
} from '../ledger/state-machine.js';
import { commitIsolated } from './commit-isolated.js';
import type { WorkerS3 } from '../copy/copy-config.js';
import { copyObjects } from '../copy/copy-object.js';
import { bump } from '../telemetry/counters.js';
import { deleteObjects } from '../copy/delete-objects.js';
import { LeaseClock, renewWhileWorking } from '../ledger/lease-fence.js';
import type { ExecuteConfig } from './execute-config.js';
import { verifyTargets } from '../copy/verify-targets.js';
import { fenceWaitMs, waitForOlderTransactions } from '../guard/guard.js';

/** A worker's view of the world while it moves one batch. */
export interface BatchContext {
  ledger: LedgerContext;
  s3: WorkerS3;
  config: ExecuteConfig;
  counters: Int32Array;
}

/**
 * Moves one claimed batch as far as it can go: copy the pending keys, commit
 * the copied ones (table and ledger in one statement), delete the sources of
 * the committed ones. A row picks up at the state it was claimed in, which
 * is what makes a resume after any crash exact.
 *
 * Each step is a set operation over the batch, so the database work per
 * batch is a constant number of statements whatever its size.
 */
export async function processBatch(ctx: BatchContext, rows: LedgerRow[], claimedAt = Date.now()): Promise<void> {
  const { ledger, counters } = ctx;
  const { maxAttempts, backoffSeconds, leaseSeconds } = ctx.config;
  const byId = new Map(rows.map((r) => [r.id, r]));
  // `maxFailures` 1 makes a failure terminal at once (nothing to retry).
  const fail = async (failures: Array<{ id: number; error: string }>, maxFailures = maxAttempts) => {
    if (failures.length === 0) return;
    lease.release(failures);
    const result = await withDbRetry(() => recordFailures(ledger, failures, maxFailures, backoffSeconds));
    bump(counters, 'retriedSteps', result.filter((r) => r.state !== 'failed').length);
    bump(counters, 'failed', result.filter((r) => r.state === 'failed').length);
  };

  // A long batch (big multipart copies, a slow server) must not lose its
  // lease to another worker halfway: renew it while we work. The lease's
  // deadline is also kept here (src/ledger/lease-fence.ts), counted from
  // when each claim or renewal was sent: a renewal that finds a key leased
  // to another worker marks the lease lost, one that renews fewer keys than
  // the batch holds leaves the deadline where it was, and no destructive
  // step is sent past it.
  const lease = new LeaseClock(claimedAt, leaseSeconds);
  const stopRenewing = renewWhileWorking(lease, [...byId.keys()], (held) => withDbRetry(() => renewBatchLeases(ledger, held, leaseSeconds)));
  try {
    // 1. pending → copied | conflict | missing
    const pending = await overwritable(ctx, rows.filter((r) => r.state === 'pending'), lease);
    const outcomes = await copyObjects(ctx.s3, pending, lease);
    await withDbRetry(() => releaseLeases(ledger, lease.release(outcomes.flatMap((o) => (o.kind === 'unfenced' ? [o.id] : [])))));
    const fatal = outcomes.find((o) => o.kind === 'fatal');
    const copied = outcomes.flatMap((o) => (o.kind === 'copied' ? [{ id: o.id, dstEtag: o.etag, made: o.made, srcEtag: o.srcEtag ?? null }] : []));
    const copiedIds = await withDbRetry(() => markCopied(ledger, copied));
    bump(counters, 'copied', copiedIds.length);
    for (const state of ['conflict', 'missing', 'archived'] as const) {
      const settled = outcomes.flatMap((o) => (o.kind === state ? [{ id: o.id, reason: o.reason }] : []));
      bump(counters, state, (await withDbRetry(() => markUnmovable(ledger, state, lease.release(settled)))).length);
    }
    await fail(outcomes.flatMap((o) => ((o.kind === 'failed' && !o.terminal) || o.kind === 'fatal' ? [{ id: o.id, error: o.error }] : [])));
    await fail(outcomes.flatMap((o) => (o.kind === 'failed' && o.terminal ? [{ id: o.id, error: o.error }] : [])), 1);
    if (fatal && fatal.kind === 'fatal') throw new FatalError(`${fatal.error} (key ${byId.get(fatal.id)?.src_key})`);

    // 2. copied → db_updated | superseded
    const toCommit = [...rows.filter((r) => r.state === 'copied').map((r) => r.id), ...copiedIds];
    const { committed, failed: uncommittable } = await commitIsolated(ledger, toCommit, backoffSeconds);
    bump(counters, 'failed', uncommittable);
    bump(counters, 'dbUpdated', committed.filter((c) => c.state === 'db_updated').length);
    bump(counters, 'superseded', committed.filter((c) => c.state === 'superseded').length);

    // 3. db_updated → done
    const justCommitted = committed.filter((c) => c.state === 'db_updated').map((c) => byId.get(c.id)!);
    if (ctx.config.stage === 'keep-source') {
      await withDbRetry(() => parkDbUpdated(ledger, justCommitted.map((r) => r.id)));
      return;
    }
    // A key claimed already in db_updated (or deleting) was committed by an
    // earlier run (a --keep-source stage, or one that crashed): anything may
    // have happened to its target since, so it is checked before the source goes.
    const target = await verifyTargets(ctx.s3, rows.filter((r) => r.state === 'db_updated' || r.state === 'deleting'));
    bump(counters, 'failed', (await withDbRetry(() => refuseDelete(ledger, lease.release(target.refused)))).length);
    await fail(target.failed);
    if (target.fatal) throw new FatalError(target.fatal);
    const cleared = await fenceAndCheck(ctx, [...target.ok, ...justCommitted].map((r) => r.id), lease);
    if (lease.lost || cleared.length === 0) {
      await withDbRetry(() => releaseLeases(ledger, lease.release(cleared)));
      return;
    }
    // Fencing: only keys a statement confirms still leased to this worker,
    // still deleting, with lease to spare, are deleted, and only while the
    // local lease deadline (counted from when that statement was sent)
    // leaves room for the request.
    const sentAt = Date.now();
    const confirmed = new Set(await withDbRetry(() => confirmLeases(ledger, cleared, 'deleting', leaseSeconds, lease.marginSeconds)));
    lease.renewedAt(sentAt);
    // A key not confirmed (its lease too close to its end, or taken) is not
    // deleted now: given back at once, still `deleting`, for the next claim
    // to fence and check again, rather than left leased to a worker that
    // will not act on it until the lease runs out.
    await withDbRetry(() => releaseLeases(ledger, lease.release(cleared.filter((id) => !confirmed.has(id)))));
    const toDelete = cleared.filter((id) => confirmed.has(id)).map((id) => byId.get(id)!);
    const deleted = await deleteObjects(ctx.s3, ctx.config.migrate.source.bucket, toDelete.map((r) => ({ id: r.id, key: r.src_key })), lease, 'delete');
    const done = await withDbRetry(() => markDone(ledger, deleted.deleted));
    bump(counters, 'done', done.length);
    if (ledger.guard === 'index' && done.length > 0) {
      // The index guard's remaining window: a row written by a transaction
      // that began after the fence and committed between the check and the
      // delete. Such rows are moved to the copy now.
      bump(counters, 'repaired', await withDbRetry(() => repairAfterDelete(ledger, done)));
    }
    await withDbRetry(() => releaseLeases(ledger, lease.release(deleted.skipped)));
    await fail(deleted.failed);
    if (deleted.fatal) throw new FatalError(deleted.fatal);
  } finally {
    stopRenewing();
  }
}

/**
 * The pending keys this batch may copy. Under `--overwrite` a copy may
 * replace what is at its destination, which is destructive: as for a
 * delete, only keys that one statement has just confirmed still pending,
 * leased to this worker and with lease to spare are copied; the rest are
 * given back. Without `--overwrite` a copy never replaces a different
 * object (the destination is checked first), so there is nothing to fence.
 */
async function overwritable(ctx: BatchContext, pending: LedgerRow[], lease: LeaseClock): Promise<LedgerRow[]> {
  if (!ctx.config.overwrite || pending.length === 0) return pending;
  const sentAt = Date.now();
  const ids = pending.map((r) => r.id);
  const confirmed = new Set(await withDbRetry(() => confirmLeases(ctx.ledger, ids, 'pending', lease.leaseSeconds, lease.marginSeconds)));
  lease.renewedAt(sentAt);
  await withDbRetry(() => releaseLeases(ctx.ledger, lease.release(ids.filter((id) => !confirmed.has(id)))));
  return pending.filter((r) => confirmed.has(r.id));
}

/**
 * The delete fence (src/guard/guard.ts), up to three rounds: fence the keys
 * (db_updated → deleting), wait until every transaction older than the
 * fence has ended, then look at every row that could name each source.
 * A row naming it exactly sends the key back to be committed (the row
 * moves onto the copy) and fenced again; a row naming it in another
 * spelling refuses the delete (the source stays). Returns the keys whose
 * sources may be deleted; they stay `deleting` and leased.
 */
async function fenceAndCheck(ctx: BatchContext, ids: number[], lease: LeaseClock): Promise<number[]> {
  const { ledger, counters } = ctx;
  const byIndex = ledger.guard === 'index';
  const cleared: number[] = [];
  let candidates = ids;
  for (let round = 1; candidates.length > 0 && !lease.lost; round++) {
    const fenced = await withDbRetry(() => fenceDeletes(ledger, candidates, lease.marginSeconds));
    // Keys not fenced (too little lease left) are given back for a later claim.
    const unfenced = candidates.filter((id) => !fenced.includes(id));
    await withDbRetry(() => releaseLeases(ledger, lease.release(unfenced)));
    if (fenced.length === 0) break;
    const wait = await withDbRetry(() => waitForOlderTransactions(ledger.db, fenceWaitMs(lease.leaseSeconds)));
    if (!wait.complete) {
      // A transaction older than the fence is still open: give the keys
      // back, fenced (their sources exist; new writes are redirected), for
      // a later claim to wait again.
      const note = `waiting for transactions older than the delete fence to end (pids ${(wait.blockers ?? []).join(', ')}); retried at the next claim`;
      await withDbRetry(() => releaseFenced(ledger, lease.release(fenced), note));
      break;
    }
    const named = await withDbRetry(() => findNamingRows(ledger, fenced, 'deleting', 'source', byIndex));
    const spelled = new Map<number, NamingRow>();
    const exact = new Map<number, string[]>();
    for (const row of named) {
      if (!row.canonical) {
        if (!spelled.has(row.ledger_id)) spelled.set(row.ledger_id, row);
      } else exact.set(row.ledger_id, [...(exact.get(row.ledger_id) ?? []), row.row_id]);
    }
    const refusals = [...spelled.values()].map((r) => ({
      id: r.ledger_id,
      reason: `row ${r.row_id} names the source as ${JSON.stringify(r.path)}; source kept`,
    }));
    bump(counters, 'failed', (await withDbRetry(() => refuseDelete(ledger, lease.release(refusals)))).length);
    const again = [...exact.entries()].filter(([id]) => !spelled.has(id)).map(([id, rowIds]) => ({ id, rowIds }));
    const requeued = new Set(await withDbRetry(() => requeueNamed(ledger, again)));
    bump(counters, 'requeued', requeued.size);
    cleared.push(...fenced.filter((id) => !spelled.has(id) && !exact.has(id)));
    if (requeued.size === 0) break;
    if (round === 3) {
      // An application that keeps writing the old path for the same key:
      // it waits for a later claim.
      await withDbRetry(() => releaseLeases(ledger, lease.release([...requeued])));
      break;
    }
    const recommitted = await withDbRetry(() => commitRows(ledger, [...requeued]));
    bump(counters, 'superseded', recommitted.filter((c) => c.state === 'superseded').length);
    candidates = recommitted.filter((c) => c.state === 'db_updated').map((c) => c.id);
  }
  return cleared;
}
