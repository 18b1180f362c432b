import type { S3Client } from '@aws-sdk/client-s3';
import type { LedgerContext } from '../ledger/state-machine.js';
import { markUnlistedMissing, recordListedPage } from '../ledger/state-machine.js';
import { withDbRetry } from '../db/retry.js';
import type { PathLimit } from './key-refusal.js';
import { DEFAULT_LIST_RANGES, ledgerBoundaries, rangesBetween } from '../listing/key-ranges.js';
import { forEachRangePage } from '../listing/list-ranges.js';
import type { RequestStats } from '../s3/retry.js';

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
  /** Key ranges listed at once (default {@link DEFAULT_LIST_RANGES}). */
  ranges?: number;
}

/**
 * Streams a listing of the source prefix into the ledger a page at a time,
 * recording size, ETag and storage class per key. The prefix is listed as
 * `config.ranges` key ranges at once (boundaries from the ledger's sorted
 * keys, src/listing/key-ranges.ts), each range a continuation chain holding
 * at most two pages: memory is constant at any key count. Orphan objects
 * get rows with no ids unless skipped. Afterwards, planned keys the listing
 * did not contain become `missing`.
 */
export async function reconcileWithListing(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  s3: S3Client,
  config: ListConfig,
  onPage?: (listed: number) => void,
): Promise<ListResult> {
  const result: ListResult = { listed: 0, orphansAdded: 0, orphansSkipped: 0, missing: 0 };
  const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  const boundaries = await ledgerBoundaries(ctx.db, ctx.schema, 'src_key', config.ranges ?? DEFAULT_LIST_RANGES);
  await forEachRangePage({ s3, bucket: config.bucket, prefix: config.sourcePrefix, stats }, rangesBetween(boundaries), async (page) => {
    // A "folder" marker is not an avatar: it has no row and nothing to move.
    const objects = page.filter((o) => o.Key && o.Key !== config.sourcePrefix && !o.Key.endsWith('/'));
    if (objects.length === 0) return;
    const found = await reconcilePage(ctx, config, objects);
    result.listed += found.listed;
    result.orphansAdded += found.orphansAdded;
    result.orphansSkipped += found.orphansSkipped;
    onPage?.(result.listed);
  });
  result.missing = await withDbRetry(() => markUnlistedMissing(ctx, config.runId));
  return result;
}

/**
 * Records one page of listed objects in the ledger (one statement:
 * `recordListedPage`). It updates up to a page of ledger rows that an
 * execute may be changing at the same moment in another order, so it can
 * deadlock; it is retried, being harmless to run again (the soak met it:
 * "plan: unexpected error: deadlock detected" during `plan --list`).
 */
export async function reconcilePage(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  config: ListConfig,
  objects: Array<{ Key?: string; Size?: number; ETag?: string; StorageClass?: string }>,
): Promise<Omit<ListResult, 'missing'>> {
  const page = {
    keys: objects.map((o) => o.Key!),
    sizes: objects.map((o) => o.Size ?? null),
    etags: objects.map((o) => o.ETag ?? null),
    storageClasses: objects.map((o) => o.StorageClass ?? 'STANDARD'),
  };
  const listing = { rules: { sourcePrefix: config.sourcePrefix, targetPrefix: config.targetPrefix, pathLimit: config.pathLimit }, orphans: config.orphans, runId: config.runId };
  const row = await withDbRetry(() => recordListedPage(ctx, page, listing));
  return {
    listed: objects.length,
    orphansAdded: row.inserted,
    orphansSkipped: config.orphans === 'skip' ? objects.length - row.seen : 0,
  };
}
