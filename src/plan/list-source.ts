import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { LedgerContext } from '../ledger/state-machine.js';
import { markUnlistedMissing, recordListedPage } from '../ledger/state-machine.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import type { PathLimit, RefusalRules } from './key-refusal.js';

/** What reconciling the ledger with a listing of the source found. */
export interface ListResult {
  /** Objects listed under the source prefix. */
  listed: number;
  /** Objects no table row references, added to the ledger. */
  orphansAdded: number;
  /** Orphans seen but left out (`--orphans skip`). */
  orphansSkipped: number;
  /** Planned keys with no object: now `missing`. */
  missing: number;
}

/** Options of `plan --list`. */
export interface ListConfig {
  bucket: string;
  sourcePrefix: string;
  targetPrefix: string;
  orphans: 'move' | 'skip';
  runId: number;
  /** The path column's length limit: orphans pass the same refusals as planned keys. */
  pathLimit?: PathLimit;
}

/**
 * Streams a listing of the source prefix into the ledger a page at a time
 * (constant memory at any key count), recording size, ETag and storage class
 * per key. Orphan objects get rows with no ids unless skipped. Afterwards,
 * planned keys the listing did not contain become `missing`.
 */
export async function reconcileWithListing(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  s3: S3Client,
  config: ListConfig,
  onPage?: (listed: number) => void,
): Promise<ListResult> {
  const limiter = new AdaptiveLimiter({ maxInFlight: 1 });
  const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  const result: ListResult = { listed: 0, orphansAdded: 0, orphansSkipped: 0, missing: 0 };
  const rules: RefusalRules = { sourcePrefix: config.sourcePrefix, targetPrefix: config.targetPrefix, pathLimit: config.pathLimit };
  let token: string | undefined;
  do {
    const page = await sendWithRetry(limiter, stats, () =>
      s3.send(new ListObjectsV2Command({ Bucket: config.bucket, Prefix: config.sourcePrefix, ContinuationToken: token })),
    );
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
    // A "folder" marker is not an avatar: it has no row and nothing to move.
    const objects = (page.Contents ?? []).filter((o) => o.Key && o.Key !== config.sourcePrefix && !o.Key.endsWith('/'));
    if (objects.length === 0) continue;
    result.listed += objects.length;
    const keys = objects.map((o) => o.Key!);
    const sizes = objects.map((o) => o.Size ?? null);
    const etags = objects.map((o) => o.ETag ?? null);
    const classes = objects.map((o) => o.StorageClass ?? 'STANDARD');
    const row = await recordListedPage(ctx, { keys, sizes, etags, storageClasses: classes }, { rules, orphans: config.orphans, runId: config.runId });
    result.orphansAdded += row.inserted;
    if (config.orphans === 'skip') result.orphansSkipped += objects.length - row.seen;
    onPage?.(result.listed);
  } while (token);
  result.missing = await markUnlistedMissing(ctx, config.runId);
  return result;
}
