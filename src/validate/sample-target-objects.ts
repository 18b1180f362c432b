import { HeadObjectCommand, type HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import { FatalError } from '../errors.js';
import { describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { TARGET_OBJECTS, targetRowsQuery } from './check-target-objects.js';
import { mismatch } from './object-match.js';
import { Findings, checkResult, plural, type CheckResult } from './validate-types.js';
import type { ValidateContext } from './validate-context.js';

/**
 * Check 2, sampled (`--sample N`): HEADs N random rows under the target
 * prefix instead of listing it all, for a quick look during a run. Postgres
 * picks the rows (`order by random()` keeps only N in memory, but reads the
 * whole table once).
 */
export async function sampleTargetObjects(ctx: ValidateContext, sample: number, concurrency: number): Promise<CheckResult> {
  const { config } = ctx;
  const rows = (await targetRowsQuery(ctx, 'random', sample).execute(ctx.db)).rows;
  const limiter = new AdaptiveLimiter({ maxInFlight: concurrency, minInFlight: Math.min(4, concurrency) });
  const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  const failures = new Findings();
  await Promise.all(
    rows.map(async (row) => {
      let head: HeadObjectCommandOutput | undefined;
      try {
        head = await sendWithRetry(limiter, stats, () => ctx.s3.send(new HeadObjectCommand({ Bucket: config.target.bucket, Key: row.path })));
      } catch (err) {
        if (s3ErrorCode(err) !== 'NotFound' && s3ErrorCode(err) !== 'NoSuchKey' && s3HttpStatus(err) !== 404) {
          throw new FatalError(`HEAD s3://${config.target.bucket}/${row.path} failed: ${describeS3Error(err)}`);
        }
      }
      if (!head) {
        failures.add({ key: row.path, rowId: row.row_id, state: row.state, reason: `no object at s3://${config.target.bucket}/${row.path}` });
        return;
      }
      const wrong = mismatch(row, { size: head.ContentLength ?? 0, etag: head.ETag ?? null });
      if (wrong) failures.add({ key: row.path, rowId: row.row_id, state: row.state, reason: wrong });
    }),
  );
  return checkResult('targetObjects', TARGET_OBJECTS, {
    summary: `${plural(rows.length, 'random row')} under ${config.target.prefix} HEADed: ${failures.count} without a matching object`,
    checked: rows.length,
    failures,
    strict: ctx.strict,
    details: { mode: 'sample', sample, requests: stats.requests },
  });
}
