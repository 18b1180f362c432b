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

/** What a listing shows of one object. */
export interface ListedObject {
  size: number | null;
  etag: string | null;
  storageClass: string | null;
}

/** The existence of a batch's destination keys, from one listing. */
export interface DestinationListing {
  lookup(key: string): ListedDestination;
  /** What the listing showed of a key found `present`. */
  facts(key: string): ListedObject | undefined;
  /** Listing requests made. */
  pages: number;
}

const UNKNOWN: DestinationListing = { lookup: () => 'unknown', facts: () => undefined, pages: 0 };

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
  return listKeyRange(ctx, ctx.config.migrate.target.bucket, rows.map((r) => r.dst_key), maxPages);
}

/**
 * `--copy-mode clone` without `plan --list`: the size, ETag and storage
 * class of a batch's sources, from one listing of the batch's source key
 * range (1/`--batch-size` requests per key) instead of a HEAD per key.
 * Same range rules as {@link listDestinations}; a key outside what was
 * listed has no facts and is copied as in `--copy-mode replace`.
 */
export async function listSources(ctx: WorkerS3, rows: LedgerRow[], maxPages = 2 + Math.ceil(rows.length / 1000)): Promise<DestinationListing> {
  return listKeyRange(ctx, ctx.config.migrate.source.bucket, rows.map((r) => r.src_key), maxPages);
}

async function listKeyRange(ctx: WorkerS3, bucket: string, unsorted: string[], maxPages: number): Promise<DestinationListing> {
  if (unsorted.length === 0) return UNKNOWN;
  const keys = unsorted.sort(compareKeys);
  const first = keys[0]!;
  const last = keys[keys.length - 1]!;
  const prefix = commonPrefix(first, last);
  // A proper prefix of `first` sorts before it: the listing starts at or before `first`.
  const startAfter = first.slice(0, Math.max(0, first.length - 1 - (/[\uDC00-\uDFFF]$/.test(first) ? 1 : 0)));
  const present = new Map<string, ListedObject>();
  let coveredTo: string | undefined;
  let pages = 0;
  let token: string | undefined;
  try {
    for (;;) {
      pages += 1;
      const page = await sendWithRetry(ctx.limiter, ctx.stats, () =>
        ctx.s3.send(
          new ListObjectsV2Command({
            Bucket: bucket,
            Prefix: prefix,
            ...(token ? { ContinuationToken: token } : { StartAfter: startAfter || undefined }),
            MaxKeys: 1000,
          }),
        ),
      );
      const contents = (page.Contents ?? []).filter((o) => o.Key !== undefined);
      for (const o of contents) present.set(o.Key!, { size: o.Size ?? null, etag: o.ETag ?? null, storageClass: o.StorageClass ?? null });
      const listed = contents.map((o) => o.Key!);
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
    facts: (key: string) => present.get(key),
    lookup(key: string): ListedDestination {
      if (present.has(key)) return 'present';
      if (complete || compareKeys(key, coveredTo!) <= 0) return 'absent';
      return 'unknown';
    },
  };
}
