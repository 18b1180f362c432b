import type { HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import { regclassName } from '../config/identifiers.js';
import { FatalError } from '../errors.js';
import { describeS3Error } from '../s3/errors.js';
import { headIfExists } from '../s3/head-object.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import type { RequestStats } from '../s3/retry.js';
import { TARGET_OBJECTS, targetRowsQuery } from './check-target-objects.js';
import { mismatch } from './object-match.js';
import { brokenReason, objectUrl } from './spellings.js';
import { Findings, checkResult, plural, type CheckResult } from './validate-types.js';
import { type ValidateContext } from './validate-context.js';

/** Pages read for a sample: enough for this many times the rows asked for, on average. */
const OVERSAMPLE = 20;

/**
 * Check 2, sampled (`--sample N`): HEADs N random rows under the target
 * prefix instead of listing it all, for a quick look during a run. Postgres
 * picks the rows with `order by random()`, which keeps only N in memory; on
 * a large table it first reads a random slice of its pages (`TABLESAMPLE
 * SYSTEM`, sized from the planner's row estimate) instead of all of them, so
 * a sample of a 100M-row table costs a few thousand pages, not a full scan.
 * Rows of one page come together, which is fine for a spot check; when the
 * slice holds fewer than N target rows, the whole table is read after all.
 */
export async function sampleTargetObjects(ctx: ValidateContext, sample: number, concurrency: number): Promise<CheckResult> {
  const { config } = ctx;
  const percent = await samplePercent(ctx, sample);
  let rows = percent === undefined ? [] : (await targetRowsQuery(ctx, 'random', sample, percent).execute(ctx.db)).rows;
  const sliced = rows.length >= sample;
  if (!sliced) rows = (await targetRowsQuery(ctx, 'random', sample).execute(ctx.db)).rows;
  const limiter = new AdaptiveLimiter({ maxInFlight: concurrency, minInFlight: Math.min(4, concurrency) });
  const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  const failures = new Findings();
  await Promise.all(
    rows.map(async (row) => {
      let head: HeadObjectCommandOutput | undefined;
      try {
        head = await headIfExists({ s3: ctx.s3, limiter, stats }, config.target.bucket, row.key);
      } catch (err) {
        throw new FatalError(`HEAD s3://${config.target.bucket}/${row.key} failed: ${describeS3Error(err)}`);
      }
      if (!head) {
        const missingObject = objectUrl(config.target, row.key);
        failures.add({ key: row.path, rowId: row.row_id, state: row.state, missingObject, reason: brokenReason(row.row_id, missingObject, row.path, row.key) });
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
    details: { mode: 'sample', sample, requests: stats.requests, pagesSampledPercent: sliced ? percent : 100 },
  });
}

/**
 * The share of the table's pages to read for `sample` rows, from the
 * planner's estimate of its rows; undefined when a slice would not be
 * smaller than the table (small or never analyzed tables).
 */
async function samplePercent(ctx: ValidateContext, sample: number): Promise<number | undefined> {
  const { table } = ctx.config;
  // Resolved as the queries resolve it (search_path), never pasted into SQL.
  const regclass = regclassName(table);
  const estimate = await sql<{ rows: number }>`
    select reltuples::float8 as rows from pg_class where oid = to_regclass(${regclass})
  `.execute(ctx.db);
  const rows = estimate.rows[0]?.rows ?? -1;
  if (rows <= 0) return undefined;
  const percent = (100 * OVERSAMPLE * sample) / rows;
  return percent < 50 ? percent : undefined;
}
