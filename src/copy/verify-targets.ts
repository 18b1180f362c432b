import type { LedgerRow } from '../ledger/state-machine.js';
import { classifyS3Error, describeS3Error } from '../s3/errors.js';
import { headIfExists } from '../s3/head-object.js';
import { factsOf, judgeTarget } from './same-object.js';
import type { WorkerS3 } from './copy-config.js';

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
export async function verifyTargets(ctx: WorkerS3, rows: LedgerRow[]): Promise<TargetCheck> {
  const check: TargetCheck = { ok: [], refused: [], failed: [] };
  const bucket = ctx.config.migrate.target.bucket;
  await Promise.all(
    rows.map(async (row) => {
      const where = `target s3://${bucket}/${row.dst_key}`;
      try {
        const head = await headIfExists(ctx, bucket, row.dst_key);
        if (!head) {
          check.refused.push({ id: row.id, reason: `${where} does not exist; source kept` });
          return;
        }
        const verdict = judgeTarget(
          { bucket: ctx.config.migrate.source.bucket, key: row.src_key },
          { srcSize: row.src_size, srcEtag: row.src_etag, dstEtag: row.dst_etag },
          factsOf(head),
        );
        if (verdict.same) check.ok.push(row);
        else check.refused.push({ id: row.id, reason: `${where} ${verdict.reason}; source kept` });
      } catch (err) {
        const error = `verify target: ${describeS3Error(err)}`;
        if (classifyS3Error(err) === 'fatal') check.fatal = error;
        check.failed.push({ id: row.id, error });
      }
    }),
  );
  return check;
}
