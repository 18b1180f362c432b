import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { LedgerRow } from '../ledger/state-machine.js';
import { sendWithRetry } from '../s3/retry.js';
import type { WorkerS3 } from './copy-config.js';

/** What one listing says about a destination key. */
export type ListedDestination =
  /** Inside the listed range and not there: no HEAD needed before the copy. */
  | 'absent'
  /** There: HEAD it and resolve as with `--dest-check head`. */
  | 'present'
  /** Outside what was listed: HEAD it. */
  | 'unknown';

/** The existence of a batch's destination keys, from one listing. */
export interface DestinationListing {
  lookup(key: string): ListedDestination;
  /** Listing requests made. */
  pages: number;
}

const UNKNOWN: DestinationListing = { lookup: () => 'unknown', pages: 0 };

/** S3 lists keys in the byte order of their UTF-8 encoding. */
const compareKeys = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

function commonPrefix(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  // Never split a surrogate pair.
  if (i > 0 && i < a.length && /[\uD800-\uDBFF]/.test(a[i - 1]!)) i--;
  return a.slice(0, i);
}

/**
 * `--dest-check list`: which of a batch's destination keys exist, from a
 * listing of the key range the batch spans, instead of a HEAD per key.
 *
 * `plan` numbers ledger rows in key order, so a claim of consecutive ids is
 * a contiguous range of source keys, and so of destination keys (the prefix
 * swap keeps the order). One ListObjectsV2 page covers up to 1,000 keys of
 * that range: a fresh migration's batch costs one request instead of one
 * HEAD per key. Other objects that happen to sort inside the range are
 * listed too; after `maxPages` pages the rest of the range is left to HEADs.
 * If the listing fails, every key is HEADed.
 *
 * The listing is made when the batch starts, so an object written at the
 * destination by someone else between the listing and a copy would be
 * overwritten: the same race a HEAD has between the HEAD and the copy, over
 * a longer window. Keys found present are HEADed and resolved exactly as with
 * `--dest-check head` (same object: copied; different: conflict).
 */
export async function listDestinations(ctx: WorkerS3, rows: LedgerRow[], maxPages = 2 + Math.ceil(rows.length / 1000)): Promise<DestinationListing> {
  if (rows.length === 0) return UNKNOWN;
  const keys = rows.map((r) => r.dst_key).sort(compareKeys);
  const first = keys[0]!;
  const last = keys[keys.length - 1]!;
  const prefix = commonPrefix(first, last);
  // A proper prefix of `first` sorts before it: the listing starts at or before `first`.
  const startAfter = first.slice(0, Math.max(0, first.length - 1 - (/[\uDC00-\uDFFF]$/.test(first) ? 1 : 0)));
  const present = new Set<string>();
  let coveredTo: string | undefined;
  let pages = 0;
  let token: string | undefined;
  try {
    for (;;) {
      pages += 1;
      const page = await sendWithRetry(ctx.limiter, ctx.stats, () =>
        ctx.s3.send(
          new ListObjectsV2Command({
            Bucket: ctx.config.migrate.target.bucket,
            Prefix: prefix,
            ...(token ? { ContinuationToken: token } : { StartAfter: startAfter || undefined }),
            MaxKeys: 1000,
          }),
        ),
      );
      const listed = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [o.Key]));
      for (const key of listed) present.add(key);
      const lastListed = listed[listed.length - 1];
      if (!page.IsTruncated || !page.NextContinuationToken) {
        coveredTo = undefined; // the whole range
        break;
      }
      coveredTo = lastListed;
      if (lastListed !== undefined && compareKeys(lastListed, last) >= 0) break;
      if (pages >= maxPages) break;
      token = page.NextContinuationToken;
    }
  } catch {
    return UNKNOWN;
  }
  const complete = coveredTo === undefined;
  return {
    pages,
    lookup(key: string): ListedDestination {
      if (present.has(key)) return 'present';
      if (complete || compareKeys(key, coveredTo!) <= 0) return 'absent';
      return 'unknown';
    },
  };
}
