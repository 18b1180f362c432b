import { DeleteObjectsCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { withDbRetry } from '../db/retry.js';
import { FatalError } from '../errors.js';
import { judgeOriginal } from '../copy/judge-original.js';
import { copyObject, type CopyContext } from '../execute/copy-objects.js';
import { classifyS3Error, describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import { sendWithRetry } from '../s3/retry.js';
import { markReverted, recordRevertFailures, revertRows, type LedgerContext, type LedgerRow, type RevertRow } from '../ledger/state-machine.js';

/** What one revert batch did, for the run's totals. */
export interface RevertTally {
  rowsOnly: number;
  copiedBack: number;
  reverted: number;
  failed: number;
}

/** A revert worker's view: the ledger, the S3 side of `execute` with source and target swapped, and its budget. */
export interface RevertContext {
  ledger: LedgerContext;
  /** Its config names the migration's target as `source` and vice versa: a copy back is a copy. */
  back: CopyContext;
  maxAttempts: number;
  backoffSeconds: number;
}

type Step = { kind: 'rows'; id: number; deleteTarget: boolean } | { kind: 'fail'; id: number; error: string; terminal: boolean };

const isNotFound = (err: unknown) => {
  const code = s3ErrorCode(err);
  return code === 'NotFound' || code === 'NoSuchKey' || s3HttpStatus(err) === 404;
};

/**
 * Reverts one claimed batch: for each key, make sure its source exists (copy
 * it back from the target when it does not), then move the rows back (one
 * statement for the batch), then delete the target copies that are ours to
 * delete. A key picks up at the state it was claimed in, so a revert killed
 * at any point resumes exactly.
 */
export async function revertBatch(ctx: RevertContext, rows: RevertRow[], tally: RevertTally): Promise<void> {
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

  // 3. Delete the target copies no row names any more.
  const byId = new Map(rows.map((r) => [r.id, r]));
  const toDelete = [...rows.filter((r) => r.state === 'reverting').map((r) => r.id), ...moved.filter((m) => m.state === 'reverting').map((m) => m.id)]
    .map((id) => byId.get(id)!);
  const deleted = await deleteTargets(ctx, toDelete);
  tally.reverted += (await withDbRetry(() => markReverted(ledger, deleted.deleted))).length;
  await fail(deleted.failed, ctx.maxAttempts);
  if (deleted.fatal) throw new FatalError(deleted.fatal);
}

/**
 * Whether the rows may go back to the source key now, and whether the
 * target copy is then ours to delete: it is when the source had been
 * deleted (`done`) or is missing and copied back here.
 */
async function ensureSource(ctx: RevertContext, row: RevertRow): Promise<Step> {
  const bucket = ctx.back.config.migrate.target.bucket;
  try {
    const head = await sendWithRetry(ctx.back.limiter, ctx.back.stats, () => ctx.back.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: row.src_key })));
    const verdict = await judgeOriginal(ctx.back, { bucket, key: row.src_key }, head, { bucket: ctx.back.config.migrate.source.bucket, key: row.dst_key }, { size: row.src_size, etag: row.src_etag });
    if (!verdict.same) return { kind: 'fail', id: row.id, terminal: true, error: `source s3://${bucket}/${row.src_key} ${verdict.reason}: rows left on the target` };
    return { kind: 'rows', id: row.id, deleteTarget: row.state === 'done' };
  } catch (err) {
    if (!isNotFound(err)) {
      const kind = classifyS3Error(err);
      return { kind: 'fail', id: row.id, terminal: false, error: `${kind === 'fatal' ? 'fatal: ' : ''}check source: ${describeS3Error(err)}` };
    }
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

/** Deletes target copies, 1,000 keys a request; per-key errors fail those keys only. */
async function deleteTargets(ctx: RevertContext, rows: RevertRow[]): Promise<{ deleted: number[]; failed: Array<{ id: number; error: string }>; fatal?: string }> {
  const outcome: { deleted: number[]; failed: Array<{ id: number; error: string }>; fatal?: string } = { deleted: [], failed: [] };
  const bucket = ctx.back.config.migrate.source.bucket;
  for (let i = 0; i < rows.length; i += 1_000) {
    const chunk = rows.slice(i, i + 1_000);
    try {
      const result = await sendWithRetry(ctx.back.limiter, ctx.back.stats, () =>
        ctx.back.s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: chunk.map((r) => ({ Key: r.dst_key })), Quiet: true } })),
      );
      const errors = new Map((result.Errors ?? []).map((e) => [e.Key, `${e.Code ?? 'Error'}: ${e.Message ?? ''}`.trim()]));
      for (const row of chunk) {
        const error = errors.get(row.dst_key);
        if (error) outcome.failed.push({ id: row.id, error: `delete target: ${error}` });
        else outcome.deleted.push(row.id);
      }
    } catch (err) {
      const error = `delete target: ${describeS3Error(err)}`;
      if (classifyS3Error(err) === 'fatal') outcome.fatal = error;
      for (const row of chunk) outcome.failed.push({ id: row.id, error });
    }
  }
  return outcome;
}
