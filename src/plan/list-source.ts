import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import type { LedgerContext } from '../ledger/state-machine.js';
import { markUnlistedMissing } from '../ledger/state-machine.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { destinationKey, keyRefusal, type PathLimit, type RefusalRules } from './key-refusal.js';

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
  const ledger = sql.id(ctx.schema, 'migration_ledger');
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
        insert into ${ledger} (src_key, dst_key, row_ids, src_size, src_etag, src_storage_class, listed_run_id, planned_run_id,
                               state, last_error, failed_state)
        select judged.src_key, judged.dst_key, '{}', judged.size, judged.etag, judged.storage_class, ${config.runId}, ${config.runId},
               case when judged.refusal is null then 'pending' else 'failed' end, judged.refusal,
               case when judged.refusal is null then null else 'pending' end
        from (select listed.*, ${destinationKey(sql`listed.src_key`, rules)} as dst_key, ${keyRefusal(sql`listed.src_key`, rules)} as refusal
              from listed) as judged
        where ${config.orphans === 'move'} and not exists (select 1 from ${ledger} as l where l.src_key = judged.src_key)
        on conflict (src_key) do nothing
        returning src_key
      )
      select (select count(*) from orphans)::int as inserted, (select count(*) from known)::int as seen
    `.execute(ctx.db);
    const row = counts.rows[0]!;
    result.orphansAdded += row.inserted;
    if (config.orphans === 'skip') result.orphansSkipped += objects.length - row.seen;
    onPage?.(result.listed);
  } while (token);
  result.missing = await markUnlistedMissing(ctx, config.runId);
  return result;
}
