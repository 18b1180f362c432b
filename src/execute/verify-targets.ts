import { HeadObjectCommand } from '@aws-sdk/client-s3';
import type { LedgerRow } from '../ledger/state-machine.js';
import { classifyS3Error, describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import { sendWithRetry } from '../s3/retry.js';
import type { CopyContext } from './copy-objects.js';

/** What checking the targets of keys about to lose their source found. */
export interface TargetCheck {
  /** Targets that exist as copied: their sources may be deleted. */
  ok: LedgerRow[];
  /** Targets gone or different: the source must stay. */
  refused: Array<{ id: number; reason: string }>;
  /** The check itself failed (after retries): try again later. */
  failed: Array<{ id: number; error: string }>;
  /** A permanent error that should end the run (permissions, missing bucket). */
  fatal?: string;
}

const bareEtag = (etag: string | null | undefined) => (etag ?? '').replace(/^W\//, '').replace(/"/g, '');

/**
 * HEADs each row's target before its source is deleted. A target that is
 * gone, or whose size (`src_size`, known when `plan --list` ran) or ETag
 * (`dst_etag`, recorded at the copy) differs, is refused: between a
 * `--keep-source` run and a `--delete-only` run anything may have happened
 * to the target, and the source is then the only good copy left.
 */
export async function verifyTargets(ctx: CopyContext, rows: LedgerRow[]): Promise<TargetCheck> {
  const check: TargetCheck = { ok: [], refused: [], failed: [] };
  const bucket = ctx.config.migrate.target.bucket;
  await Promise.all(
    rows.map(async (row) => {
      const where = `target s3://${bucket}/${row.dst_key}`;
      try {
        const head = await sendWithRetry(ctx.limiter, ctx.stats, () => ctx.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: row.dst_key })));
        if (row.src_size != null && head.ContentLength != null && Number(row.src_size) !== head.ContentLength) {
          check.refused.push({ id: row.id, reason: `${where} is ${head.ContentLength} bytes, the copy was ${row.src_size}; source kept` });
        } else if (row.dst_etag != null && bareEtag(head.ETag) !== bareEtag(row.dst_etag)) {
          check.refused.push({ id: row.id, reason: `${where} has ETag ${bareEtag(head.ETag)}, the copy had ${bareEtag(row.dst_etag)}; source kept` });
        } else {
          check.ok.push(row);
        }
      } catch (err) {
        const code = s3ErrorCode(err);
        if (code === 'NotFound' || code === 'NoSuchKey' || s3HttpStatus(err) === 404) {
          check.refused.push({ id: row.id, reason: `${where} does not exist; source kept` });
          return;
        }
        const error = `verify target: ${describeS3Error(err)}`;
        if (classifyS3Error(err) === 'fatal') check.fatal = error;
        check.failed.push({ id: row.id, error });
      }
    }),
  );
  return check;
}
