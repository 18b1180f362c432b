import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { classifyS3Error, describeS3Error } from '../s3/errors.js';
import { sendWithRetry } from '../s3/retry.js';
import type { CopyContext } from './copy-objects.js';
import { LeaseTooShort, type LeaseClock } from './lease-fence.js';

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

/**
 * Deletes source objects with `DeleteObjects`, 1,000 keys a request. Quiet
 * mode returns only the failures, which arrive per key in `Errors` even with
 * HTTP 200: those keys are reported failed, the rest deleted. Deleting a
 * key that is already gone succeeds, which makes a resumed delete harmless.
 */
export async function deleteSources(ctx: CopyContext, rows: Array<{ id: number; src_key: string }>, lease: Pick<LeaseClock, 'destructiveSignal'>): Promise<DeleteOutcome> {
  const outcome: DeleteOutcome = { deleted: [], failed: [], skipped: [] };
  const chunks: Array<typeof rows> = [];
  for (let i = 0; i < rows.length; i += MAX_KEYS_PER_DELETE) chunks.push(rows.slice(i, i + MAX_KEYS_PER_DELETE));
  await Promise.all(
    chunks.map(async (chunk) => {
      try {
        const result = await sendWithRetry(ctx.limiter, ctx.stats, () =>
          ctx.s3.send(
            new DeleteObjectsCommand({
              Bucket: ctx.config.migrate.source.bucket,
              Delete: { Objects: chunk.map((r) => ({ Key: r.src_key })), Quiet: true },
            }),
            // Fenced by the lease (src/execute/lease-fence.ts), checked as the request leaves and on each retry.
            { abortSignal: lease.destructiveSignal() },
          ),
        );
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
