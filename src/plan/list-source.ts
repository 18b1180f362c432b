import type { S3Client } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import type { LedgerContext } from '../ledger/state-machine.js';
import { markUnlistedMissing } from '../ledger/state-machine.js';
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
  result.missing = await markUnlistedMissing(ctx, config.runId);
  return result;
}

/** Records one page of listed objects in the ledger (one statement). */
export async function reconcilePage(
  ctx: Pick<LedgerContext, 'db' | 'schema'>,
  config: ListConfig,
  objects: Array<{ Key?: string; Size?: number; ETag?: string; StorageClass?: string }>,
): Promise<Omit<ListResult, 'missing'>> {
  const ledger = sql.id(ctx.schema, 'migration_ledger');
  const keys = objects.map((o) => o.Key!);
  const sizes = objects.map((o) => o.Size ?? null);
  const etags = objects.map((o) => o.ETag ?? null);
  const classes = objects.map((o) => o.StorageClass ?? 'STANDARD');
  const counts = await sql<{ inserted: number; seen: number }>`
    with listed as (
      select * from unnest(${keys}::text[], ${sizes}::bigint[], ${etags}::text[], ${classes}::text[])
        as v(src_key, size, etag, storage_class)
    ),
    known as (
      update ${ledger} as l
      set src_size = listed.size, src_etag = listed.etag, src_storage_class = listed.storage_class,
          listed_run_id = ${config.runId}, updated_at = now()
      from listed where l.src_key = listed.src_key
      returning l.src_key
    ),
    orphans as (
      insert into ${ledger} (src_key, dst_key, row_ids, src_size, src_etag, src_storage_class, listed_run_id, planned_run_id)
      select listed.src_key, ${config.targetPrefix} || substr(listed.src_key, ${config.sourcePrefix.length} + 1), '{}',
             listed.size, listed.etag, listed.storage_class, ${config.runId}, ${config.runId}
      from listed
      where ${config.orphans === 'move'} and not exists (select 1 from ${ledger} as l where l.src_key = listed.src_key)
      on conflict (src_key) do nothing
      returning src_key
    )
    select (select count(*) from orphans)::int as inserted, (select count(*) from known)::int as seen
  `.execute(ctx.db);
  const row = counts.rows[0]!;
  return {
    listed: objects.length,
    orphansAdded: row.inserted,
    orphansSkipped: config.orphans === 'skip' ? objects.length - row.seen : 0,
  };
}
