/**
 * Listing a prefix as K key ranges at once (see key-ranges.ts). Each range
 * is its own continuation chain with the next page requested while the
 * current one is consumed, so memory is at most two pages per range,
 * whatever the prefix holds.
 */
import { ListObjectsV2Command, type ListObjectsV2CommandOutput, type S3Client, type _Object } from '@aws-sdk/client-s3';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { compareKeys } from '../validate/compare-keys.js';
import { inRange, type KeyRange } from './key-ranges.js';

/** Where and how to list. */
export interface RangeListConfig {
  s3: S3Client;
  bucket: string;
  prefix: string;
  /** Keys per page (S3's maximum, 1,000, by default). */
  pageSize?: number;
  /** Request counts, shared by every range. */
  stats?: RequestStats;
  /** Turns a failed request into the error to throw (after retries). */
  onError?: (err: unknown) => Error;
}

/**
 * The objects of one range, a page at a time, in S3's order. The first
 * request starts after `range.after`; the chain stops at the first key past
 * `range.through`, so neighbouring ranges overlap by at most one page read.
 */
export async function* listRangePages(config: RangeListConfig, range: KeyRange): AsyncGenerator<_Object[]> {
  const limiter = new AdaptiveLimiter({ maxInFlight: 1 });
  const stats = config.stats ?? { requests: 0, retries: 0, throttles: 0 };
  const fetchPage = (token: string | undefined): Promise<ListObjectsV2CommandOutput> =>
    sendWithRetry(limiter, stats, () =>
      config.s3.send(
        new ListObjectsV2Command({
          Bucket: config.bucket,
          Prefix: config.prefix,
          MaxKeys: config.pageSize ?? 1000,
          ...(token ? { ContinuationToken: token } : range.after !== undefined ? { StartAfter: range.after } : {}),
        }),
      ),
    ).catch((err: unknown) => {
      throw config.onError ? config.onError(err) : err;
    });
  let next: Promise<ListObjectsV2CommandOutput> | undefined = fetchPage(undefined);
  while (next) {
    const page: ListObjectsV2CommandOutput = await next;
    const contents = (page.Contents ?? []).filter((o) => o.Key !== undefined);
    const last = contents.at(-1)?.Key;
    const pastEnd = range.through !== undefined && last !== undefined && compareKeys(last, range.through) > 0;
    next = !pastEnd && page.IsTruncated && page.NextContinuationToken ? fetchPage(page.NextContinuationToken) : undefined;
    next?.catch(() => undefined);
    const inside = pastEnd ? contents.filter((o) => inRange(range, o.Key!)) : contents;
    if (inside.length > 0) yield inside;
  }
}

/**
 * Runs `consume` on every page of every range, `ranges.length` chains at
 * once; resolves when all are done, rejects on the first failure (the other
 * chains stop at their next page).
 */
export async function forEachRangePage(
  config: RangeListConfig,
  ranges: readonly KeyRange[],
  consume: (page: _Object[], rangeIndex: number) => Promise<void>,
): Promise<void> {
  let failed = false;
  await Promise.all(
    ranges.map(async (range, index) => {
      try {
        for await (const page of listRangePages(config, range)) {
          if (failed) return;
          await consume(page, index);
        }
      } catch (err) {
        failed = true;
        throw err;
      }
    }),
  );
}
