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
  releaseLeases,
  renewLeases,
  requeueReferenced,
  type LedgerContext,
  type LedgerRow,
} from '../ledger/state-machine.js';
import { commitIsolated } from './commit-isolated.js';
import { copyObjects, type CopyContext } from './copy-objects.js';
import { bump } from './counters.js';
import { deleteSources } from './delete-sources.js';
import { verifyTargets } from './verify-targets.js';

/** A worker's view of the world while it moves one batch. */
export interface BatchContext {
  ledger: LedgerContext;
  s3: CopyContext;
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
export async function processBatch(ctx: BatchContext, rows: LedgerRow[]): Promise<void> {
  const { ledger, counters } = ctx;
  const { maxAttempts, backoffSeconds, leaseSeconds } = ctx.s3.config;
  const byId = new Map(rows.map((r) => [r.id, r]));
  // `maxFailures` 1 makes a failure terminal at once (nothing to retry).
  const fail = async (failures: Array<{ id: number; error: string }>, maxFailures = maxAttempts) => {
    if (failures.length === 0) return;
    const result = await withDbRetry(() => recordFailures(ledger, failures, maxFailures, backoffSeconds));
    bump(counters, 'retriedSteps', result.filter((r) => r.state !== 'failed').length);
    bump(counters, 'failed', result.filter((r) => r.state === 'failed').length);
  };

  // A long batch (big multipart copies, a slow server) must not lose its
  // lease to another worker halfway: renew it while we work.
  const heartbeat = setInterval(() => {
    void withDbRetry(() => renewLeases(ledger, [...byId.keys()], leaseSeconds)).catch(() => undefined);
  }, Math.max(1_000, (leaseSeconds * 1000) / 3));
  heartbeat.unref();
  try {
    // 1. pending → copied | conflict | missing
    const pending = rows.filter((r) => r.state === 'pending');
    const outcomes = await copyObjects(ctx.s3, pending);
    const fatal = outcomes.find((o) => o.kind === 'fatal');
    const copied = outcomes.flatMap((o) => (o.kind === 'copied' ? [{ id: o.id, dstEtag: o.etag }] : []));
    const copiedIds = await withDbRetry(() => markCopied(ledger, copied));
    bump(counters, 'copied', copiedIds.length);
    for (const state of ['conflict', 'missing', 'archived'] as const) {
      const settled = outcomes.flatMap((o) => (o.kind === state ? [{ id: o.id, reason: o.reason }] : []));
      bump(counters, state, (await withDbRetry(() => markUnmovable(ledger, state, settled))).length);
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
    if (ctx.s3.config.stage === 'keep-source') {
      await withDbRetry(() => parkDbUpdated(ledger, justCommitted.map((r) => r.id)));
      return;
    }
    // A key claimed already in db_updated was committed by an earlier run (a
    // --keep-source stage, or one that crashed): anything may have happened
    // to its target since, so it is checked before the source goes.
    const target = await verifyTargets(ctx.s3, rows.filter((r) => r.state === 'db_updated'));
    bump(counters, 'failed', (await withDbRetry(() => refuseDelete(ledger, target.refused))).length);
    await fail(target.failed);
    if (target.fatal) throw new FatalError(target.fatal);
    let toDelete = [...target.ok, ...justCommitted];
    // Rows the application added since the plan may still name some
    // sources: those keys are committed again (moving the new rows too) and
    // checked again. An application that keeps adding rows for the same key
    // gets three rounds; then the key waits for a later claim.
    for (let round = 1; ledger.guardReferences && toDelete.length > 0; round++) {
      const requeued = new Set(await withDbRetry(() => requeueReferenced(ledger, toDelete)));
      if (requeued.size === 0) break;
      bump(counters, 'requeued', requeued.size);
      toDelete = toDelete.filter((r) => !requeued.has(r.id));
      if (round === 3) {
        await withDbRetry(() => releaseLeases(ledger, [...requeued]));
        break;
      }
      const recommitted = await withDbRetry(() => commitRows(ledger, [...requeued]));
      bump(counters, 'superseded', recommitted.filter((c) => c.state === 'superseded').length);
      toDelete.push(...recommitted.filter((c) => c.state === 'db_updated').map((c) => byId.get(c.id)!));
    }
    const deleted = await deleteSources(ctx.s3, toDelete);
    bump(counters, 'done', (await withDbRetry(() => markDone(ledger, deleted.deleted))).length);
    await fail(deleted.failed);
    if (deleted.fatal) throw new FatalError(deleted.fatal);
  } finally {
    clearInterval(heartbeat);
  }
}
