import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { LeaseTooShort, type LeaseClock } from '../ledger/lease-fence.js';
import { classifyS3Error, describeS3Error } from '../s3/errors.js';
import type { S3Lane } from '../s3/head-object.js';
import { sendWithRetry } from '../s3/retry.js';

/** What deleting a set of keys' objects did, by ledger id. */
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
 * Deletes objects with `DeleteObjects`, 1,000 keys a request: execute's
 * sources and revert's target copies. Quiet mode returns only the failures,
 * which arrive per key in `Errors` even with HTTP 200: those keys are
 * reported failed, the rest deleted. Deleting a key that is already gone
 * succeeds, which makes a resumed delete harmless.
 *
 * Fenced by the lease (src/ledger/lease-fence.ts): each request, and each
 * retry, is sent only while the lease, counted locally from the statement
 * that confirmed these keys, leaves room for it, and is aborted when it no
 * longer does; a request not sent leaves its keys `skipped`.
 *
 * `what` starts every error message (`delete`, `delete target`).
 */
export async function deleteObjects(
  lane: S3Lane,
  bucket: string,
  objects: Array<{ id: number; key: string }>,
  lease: Pick<LeaseClock, 'destructiveSignal'>,
  what: string,
): Promise<DeleteOutcome> {
  const outcome: DeleteOutcome = { deleted: [], failed: [], skipped: [] };
  const chunks: Array<typeof objects> = [];
  for (let i = 0; i < objects.length; i += MAX_KEYS_PER_DELETE) chunks.push(objects.slice(i, i + MAX_KEYS_PER_DELETE));
  await Promise.all(
    chunks.map(async (chunk) => {
      try {
        const result = await sendWithRetry(lane.limiter, lane.stats, () =>
          lane.s3.send(
            new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: chunk.map((o) => ({ Key: o.key })), Quiet: true } }),
            { abortSignal: lease.destructiveSignal() },
          ),
        );
        const errors = new Map((result.Errors ?? []).map((e) => [e.Key, `${e.Code ?? 'Error'}: ${e.Message ?? ''}`.trim()]));
        for (const object of chunk) {
          const error = errors.get(object.key);
          if (error) outcome.failed.push({ id: object.id, error: `${what}: ${error}` });
          else outcome.deleted.push(object.id);
        }
      } catch (err) {
        if (err instanceof LeaseTooShort) {
          for (const object of chunk) outcome.skipped.push(object.id);
          return;
        }
        const error = `${what}: ${describeS3Error(err)}`;
        if (classifyS3Error(err) === 'fatal') outcome.fatal = error;
        for (const object of chunk) outcome.failed.push({ id: object.id, error });
      }
    }),
  );
  return outcome;
}
