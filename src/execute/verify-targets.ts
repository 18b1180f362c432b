import { HeadObjectCommand } from '@aws-sdk/client-s3';
import type { LedgerRow } from '../ledger/state-machine.js';
import { classifyS3Error, describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import { sendWithRetry } from '../s3/retry.js';
import { factsOf, judgeTarget } from '../copy/same-object.js';
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


/**
 * HEADs each row's target before its source is deleted. A target that is
 * gone, or that is not the copy made (see `judgeTarget`: its size, the ETag
 * recorded at the copy, or its provenance), is refused: between a
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
        const verdict = judgeTarget(
          { bucket: ctx.config.migrate.source.bucket, key: row.src_key },
          { srcSize: row.src_size, srcEtag: row.src_etag, dstEtag: row.dst_etag },
          factsOf(head),
        );
        if (verdict.same) check.ok.push(row);
        else check.refused.push({ id: row.id, reason: `${where} ${verdict.reason}; source kept` });
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
