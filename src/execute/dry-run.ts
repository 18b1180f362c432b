import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { sql, type Kysely } from 'kysely';
import type { MigrateConfig } from '../config/config.js';
import { isNotFound } from '../s3/errors.js';
import { formatDuration, formatSize, out } from '../util/output.js';
import { factsOf, judgeCopy } from '../copy/same-object.js';
import type { ExecuteConfig } from './execute-config.js';

/** One action `execute` would take next. */
export interface PlannedAction {
  srcKey: string;
  dstKey: string;
  state: string;
  /** What would happen: the steps left, or why the key would be refused. */
  action: string;
}

async function head(s3: S3Client, bucket: string, key: string) {
  try {
    return await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * `execute --dry-run`: reads the next `limit` live keys in claim order and
 * says what execute would do with each, HEADing objects to predict conflicts
 * and missing sources. It claims nothing and writes nothing, to the ledger,
 * the table or either bucket.
 */
export async function dryRun(db: Kysely<any>, s3: S3Client, config: MigrateConfig, limit: number): Promise<PlannedAction[]> {
  const rows = await sql<{ src_key: string; dst_key: string; state: string; row_ids: string[]; src_size: number | null; src_etag: string | null }>`
    select src_key, dst_key, state, row_ids, src_size::float8 as src_size, src_etag from ${sql.id(config.ledgerSchema, 'migration_ledger')}
    where state in ('pending', 'copied', 'db_updated', 'deleting')
    order by id
    limit ${limit}
  `.execute(db);
  const actions: PlannedAction[] = [];
  for (const row of rows.rows) {
    const ids = row.row_ids.length ? `update ids ${row.row_ids.join(',')}` : 'no rows to update';
    let action: string;
    if (row.state === 'pending') {
      const [src, dst] = await Promise.all([head(s3, config.source.bucket, row.src_key), head(s3, config.target.bucket, row.dst_key)]);
      const judged = dst
        ? judgeCopy({ bucket: config.source.bucket, key: row.src_key }, src ? { fresh: factsOf(src) } : { planned: { size: row.src_size, etag: row.src_etag } }, factsOf(dst))
        : undefined;
      if (judged && !judged.same) {
        action = `refuse: conflict (a different object exists at the destination: ${judged.reason})`;
      } else if (!src && !dst) {
        action = 'refuse: missing (no source object)';
      } else {
        action = `${dst ? 'keep the identical copy' : 'copy'}, ${ids}, delete source`;
      }
    } else if (row.state === 'copied') {
      action = `${ids}, delete source`;
    } else {
      action = 'delete source';
    }
    actions.push({ srcKey: row.src_key, dstKey: row.dst_key, state: row.state, action });
  }
  return actions;
}

/** Prints dry-run actions, one line each. */
export function printDryRun(config: MigrateConfig, actions: PlannedAction[]): void {
  out.result(`dry run: the next ${actions.length} keys (nothing is claimed or changed)`);
  for (const a of actions) {
    out.result(`${a.state.padEnd(10)} s3://${config.source.bucket}/${a.srcKey} -> s3://${config.target.bucket}/${a.dstKey}: ${a.action}`);
  }
}

/**
 * Assumed AWS S3 Standard request prices (us-east-1, USD per 1,000
 * requests): PUT, COPY, POST and LIST requests at $0.005, GET and HEAD at
 * $0.0004, DELETE free (DeleteObjects counted as deletes). Printed with
 * the estimate, so nobody mistakes it for a quote.
 */
export const REQUEST_PRICES = { write: 0.005, read: 0.0004, delete: 0 } as const;

/** What the whole remaining run would cost, as `execute --dry-run` prints it. */
export interface DryRunTotals {
  keys: Record<string, number>;
  keysTotal: number;
  /** Bytes of the keys whose size the plan recorded (plan --list). */
  bytes: number;
  keysWithSize: number;
  requests: Record<string, number>;
  requestsTotal: number;
  costUsd: number;
  /** Seconds at --max-rps (undefined without a cap). */
  secondsAtMaxRps?: number;
}

/** Counts the remaining work from the ledger and turns it into S3 requests, dollars and time. */
export async function dryRunTotals(db: Kysely<any>, config: ExecuteConfig): Promise<DryRunTotals> {
  // As asked: a KMS-default source bucket turns clone into replace at the start of the run (src/copy/copy-mode.ts).
  const cloning = config.copyMode === 'clone' && !config.overwrite && !config.sseKmsKeyId;
  const rows = (await sql<{ state: string; keys: number; bytes: number | null; sized: number; need_head: number; unlisted: number; multipart: number; parts: number }>`
    select state, count(*)::int as keys, sum(src_size)::float8 as bytes, count(src_size)::int as sized,
           count(*) filter (where not ${cloning} or src_etag like '%-%' or src_size > ${config.multipartThreshold})::int as need_head,
           count(*) filter (where src_etag is null)::int as unlisted,
           count(*) filter (where src_size > ${config.multipartThreshold})::int as multipart,
           coalesce(sum(ceil(src_size::numeric / ${config.partSize})) filter (where src_size > ${config.multipartThreshold}), 0)::float8 as parts
    from ${sql.id(config.migrate.ledgerSchema, 'migration_ledger')}
    where state in ('pending', 'copied', 'db_updated')
    group by state
  `.execute(db)).rows;
  const by = (state: string) => rows.find((r) => r.state === state) ?? { keys: 0, bytes: 0, sized: 0, need_head: 0, unlisted: 0, multipart: 0, parts: 0 };
  const pending = by('pending');
  const keysTotal = rows.reduce((n, r) => n + r.keys, 0);
  const batches = (n: number) => Math.ceil(n / Math.max(1, Math.min(config.batchSize, 1000)));
  const requests: Record<string, number> = {
    CopyObject: pending.keys - pending.multipart,
    UploadPartCopy: pending.parts,
    CreateMultipartUpload: pending.multipart,
    CompleteMultipartUpload: pending.multipart,
    // A source is HEADed unless it is cloned (--copy-mode clone, single-part); multipart copies are HEADed after too.
    HeadObject: pending.need_head + pending.multipart + (config.destCheck === 'head' ? pending.keys : 0),
    // A destination listing per batch (--dest-check list), and a source listing per batch of keys the plan did not list (clone).
    ListObjectsV2: (config.destCheck === 'list' ? batches(pending.keys) : 0) + (cloning ? batches(pending.unlisted) : 0),
    DeleteObjects: batches(keysTotal),
  };
  const requestsTotal = Object.values(requests).reduce((a, b) => a + b, 0);
  const writes = requests.CopyObject! + requests.UploadPartCopy! + requests.CreateMultipartUpload! + requests.CompleteMultipartUpload! + requests.ListObjectsV2!;
  const costUsd = (writes * REQUEST_PRICES.write + requests.HeadObject! * REQUEST_PRICES.read + requests.DeleteObjects! * REQUEST_PRICES.delete) / 1000;
  return {
    keys: Object.fromEntries(rows.map((r) => [r.state, r.keys])),
    keysTotal,
    bytes: rows.reduce((n, r) => n + (r.bytes ?? 0), 0),
    keysWithSize: rows.reduce((n, r) => n + r.sized, 0),
    requests,
    requestsTotal,
    costUsd,
    secondsAtMaxRps: config.maxRps > 0 ? requestsTotal / config.maxRps : undefined,
  };
}

/** Prints the totals under the dry run's actions. */
export function printDryRunTotals(config: ExecuteConfig, totals: DryRunTotals): void {
  const states = Object.entries(totals.keys).map(([s, n]) => `${s} ${n}`).join(', ') || 'none';
  const sized = totals.keysWithSize < totals.keysTotal ? ` (sizes known for ${totals.keysWithSize} of them: run plan --list to record the rest)` : '';
  out.result(`dry run totals: ${totals.keysTotal} keys left (${states}), ${formatSize(totals.bytes)} to copy${sized}`);
  const requests = Object.entries(totals.requests).filter(([, n]) => n > 0).map(([op, n]) => `${op} ${n}`).join(', ');
  out.result(`  about ${totals.requestsTotal} S3 requests (${requests || 'none'}), not counting retries`);
  out.result(
    `  estimated AWS request cost $${totals.costUsd.toFixed(2)} (assumed S3 Standard prices: $0.005 per 1,000 COPY/PUT/POST/LIST, ` +
      `$0.0004 per 1,000 GET/HEAD, DELETE free; copies between regions and storage are extra)`,
  );
  out.result(
    totals.secondsAtMaxRps === undefined
      ? '  time: no --max-rps cap, so the time depends on the server (see npm run bench and docs/SCALE.md)'
      : `  time at --max-rps ${config.maxRps}: at least ${formatDuration(totals.secondsAtMaxRps)}`,
  );
}
