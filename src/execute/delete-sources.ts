import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { classifyS3Error, describeS3Error } from '../s3/errors.js';
import { sendWithRetry } from '../s3/retry.js';
import type { CopyContext } from './copy-objects.js';

/** What deleting a set of source keys did. */
export interface DeleteOutcome {
  deleted: number[];
  failed: Array<{ id: number; error: string }>;
  /** Not sent: the lease had too little time left (or was lost); the keys are given back as they are. */
  skipped: number[];
  /** A permanent error that should end the run (permissions, missing bucket). */
  fatal?: string;
}

const MAX_KEYS_PER_DELETE = 1_000;

/** When a destructive request may still be sent (see `LeaseClock` in process-batch.ts). */
export interface DeleteFence {
  /** Epoch ms after which no request may be in flight: the local lease deadline less a margin. */
  deadline: () => number;
  /** True once the batch's lease was found taken. */
  lost: () => boolean;
}

/** The S3 request timeout of a destructive request is at most this (the client's default request timeout). */
const MAX_DESTRUCTIVE_TIMEOUT_MS = 60_000;

/** Thrown instead of sending a destructive request the lease leaves no room for. */
export class LeaseTooShort extends Error {
  // A 409-like status makes sendWithRetry treat it as permanent: not retried.
  readonly $metadata = { httpStatusCode: 409 };
  constructor() {
    super('lease too short to send the delete');
    this.name = 'LeaseTooShort';
  }
}

/**
 * Deletes source objects with `DeleteObjects`, 1,000 keys a request. Quiet
 * mode returns only the failures, which arrive per key in `Errors` even with
 * HTTP 200: those keys are reported failed, the rest deleted. Deleting a
 * key that is already gone succeeds, which makes a resumed delete harmless.
 */
export async function deleteSources(ctx: CopyContext, rows: Array<{ id: number; src_key: string }>, fence: DeleteFence): Promise<DeleteOutcome> {
  const outcome: DeleteOutcome = { deleted: [], failed: [], skipped: [] };
  const chunks: Array<typeof rows> = [];
  for (let i = 0; i < rows.length; i += MAX_KEYS_PER_DELETE) chunks.push(rows.slice(i, i + MAX_KEYS_PER_DELETE));
  await Promise.all(
    chunks.map(async (chunk) => {
      try {
        const result = await sendWithRetry(ctx.limiter, ctx.stats, () => {
          // Checked when the request is about to leave (after the limiter's
          // queue), and again on each retry: the request must be over, or
          // aborted, before the lease could pass to another worker.
          const left = fence.deadline() - Date.now();
          if (fence.lost() || left <= 0) throw new LeaseTooShort();
          return ctx.s3.send(
            new DeleteObjectsCommand({
              Bucket: ctx.config.migrate.source.bucket,
              Delete: { Objects: chunk.map((r) => ({ Key: r.src_key })), Quiet: true },
            }),
            { abortSignal: AbortSignal.timeout(Math.min(left, MAX_DESTRUCTIVE_TIMEOUT_MS)) },
          );
        });
        const errors = new Map((result.Errors ?? []).map((e) => [e.Key, `${e.Code ?? 'Error'}: ${e.Message ?? ''}`.trim()]));
        for (const row of chunk) {
          const error = errors.get(row.src_key);
          if (error) outcome.failed.push({ id: row.id, error: `delete: ${error}` });
          else outcome.deleted.push(row.id);
        }
      } catch (err) {
        if (err instanceof LeaseTooShort) {
          for (const row of chunk) outcome.skipped.push(row.id);
          return;
        }
        const error = `delete: ${describeS3Error(err)}`;
        if (classifyS3Error(err) === 'fatal') outcome.fatal = error;
        for (const row of chunk) outcome.failed.push({ id: row.id, error });
      }
    }),
  );
  return outcome;
}
