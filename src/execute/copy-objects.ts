import { CopyObjectCommand, HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import type { LedgerRow } from '../ledger/state-machine.js';
import { encodeCopySource } from '../s3/copy-source.js';
import { classifyS3Error, describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import type { AdaptiveLimiter } from '../s3/limiter.js';
import { multipartCopy } from '../s3/multipart-copy.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { MAX_SINGLE_COPY, type ExecuteConfig } from './execute-config.js';

/** What happened to one pending key's copy. */
export type CopyOutcome =
  | { kind: 'copied'; id: number; etag: string | null }
  | { kind: 'conflict' | 'missing'; id: number; reason: string }
  | { kind: 'failed'; id: number; error: string }
  | { kind: 'fatal'; id: number; error: string };

/** The S3 side of a worker: its client, limiter and counters. */
export interface CopyContext {
  s3: S3Client;
  limiter: AdaptiveLimiter;
  stats: RequestStats;
  config: ExecuteConfig;
}

/** Copies every pending row of a batch, concurrently within the limiter. */
export function copyObjects(ctx: CopyContext, rows: LedgerRow[]): Promise<CopyOutcome[]> {
  return Promise.all(rows.map((row) => copyObject(ctx, row)));
}

function isNotFound(err: unknown): boolean {
  const code = s3ErrorCode(err);
  return code === 'NotFound' || code === 'NoSuchKey' || s3HttpStatus(err) === 404;
}

async function head(ctx: CopyContext, bucket: string, key: string): Promise<HeadObjectCommandOutput | undefined> {
  try {
    return await sendWithRetry(ctx.limiter, ctx.stats, () => ctx.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

const isMultipartEtag = (etag: string | undefined | null) => !!etag && etag.includes('-');

/**
 * Whether two objects are the same. A single-part ETag is the MD5 of the
 * bytes, so size and ETag decide it; a multipart ETag is not an MD5 and a
 * multipart copy changes it, so then only the size can be compared.
 */
export function sameObject(
  a: { size?: number | null; etag?: string | null },
  b: { size?: number | null; etag?: string | null },
): boolean {
  if (a.size == null || b.size == null || a.size !== b.size) return false;
  if (isMultipartEtag(a.etag) || isMultipartEtag(b.etag)) return true;
  return !!a.etag && a.etag === b.etag;
}

/**
 * One key, pending → copied (or conflict, missing, failed). Never overwrites
 * a different object at the destination unless `--overwrite`: the
 * destination is checked first (a HEAD, or the server's `If-None-Match`),
 * and an identical object there counts as copied, which is how a resume
 * after a crash between copy and ledger update finishes.
 */
export async function copyObject(ctx: CopyContext, row: LedgerRow): Promise<CopyOutcome> {
  const { config } = ctx;
  const src = { bucket: config.migrate.source.bucket, key: row.src_key };
  const dst = { bucket: config.migrate.target.bucket, key: row.dst_key };
  try {
    let sourceHead: HeadObjectCommandOutput | undefined;
    if (!config.overwrite && config.destCheck === 'head') {
      const existing = await head(ctx, dst.bucket, dst.key);
      if (existing) return await resolveExisting(ctx, row, existing);
    }
    const knownSize = row.src_size;
    const mayNeedParts = config.multipartThreshold < MAX_SINGLE_COPY;
    if (knownSize == null && mayNeedParts) {
      sourceHead = await head(ctx, src.bucket, src.key);
      if (!sourceHead) return await resolveMissingSource(ctx, row);
    }
    const size = knownSize ?? sourceHead?.ContentLength ?? 0;
    if (size > config.multipartThreshold) {
      sourceHead ??= await head(ctx, src.bucket, src.key);
      if (!sourceHead) return await resolveMissingSource(ctx, row);
      if (row.src_etag && sourceHead.ETag !== row.src_etag) {
        return { kind: 'failed', id: row.id, error: `source changed since plan (ETag ${row.src_etag} is now ${sourceHead.ETag}): re-run plan --list` };
      }
      const etag = await multipartCopy(ctx.s3, ctx.limiter, ctx.stats, {
        sourceBucket: src.bucket,
        sourceKey: src.key,
        targetBucket: dst.bucket,
        targetKey: dst.key,
        source: sourceHead,
        partSize: config.partSize,
      });
      return { kind: 'copied', id: row.id, etag: etag ?? null };
    }
    const copied = await sendWithRetry(ctx.limiter, ctx.stats, () =>
      ctx.s3.send(
        new CopyObjectCommand({
          Bucket: dst.bucket,
          Key: dst.key,
          CopySource: encodeCopySource(src.bucket, src.key),
          CopySourceIfMatch: row.src_etag ?? undefined,
          IfNoneMatch: config.overwrite ? undefined : '*',
          MetadataDirective: 'COPY',
          TaggingDirective: 'COPY',
        }),
      ),
    );
    return { kind: 'copied', id: row.id, etag: copied.CopyObjectResult?.ETag ?? null };
  } catch (err) {
    if (isNotFound(err) && s3ErrorCode(err) !== 'NoSuchBucket') return resolveMissingSource(ctx, row).catch((e) => failure(row, e));
    if (s3ErrorCode(err) === 'PreconditionFailed' || s3HttpStatus(err) === 412) {
      return resolvePrecondition(ctx, row).catch((e) => failure(row, e));
    }
    return failure(row, err);
  }
}

function failure(row: LedgerRow, err: unknown): CopyOutcome {
  const kind = classifyS3Error(err) === 'fatal' ? 'fatal' : 'failed';
  return { kind, id: row.id, error: `copy: ${describeS3Error(err)}` };
}

/** The destination exists: the same object is a resume, another one a conflict. */
async function resolveExisting(ctx: CopyContext, row: LedgerRow, existing: HeadObjectCommandOutput): Promise<CopyOutcome> {
  const source = await head(ctx, ctx.config.migrate.source.bucket, row.src_key);
  const dst = { size: existing.ContentLength, etag: existing.ETag };
  if (!source) {
    // The source is gone but a copy exists: a crash after an earlier delete,
    // or someone moved it. Trust it only if it matches what the plan listed.
    if (row.src_etag == null || sameObject({ size: row.src_size, etag: row.src_etag }, dst)) {
      return { kind: 'copied', id: row.id, etag: existing.ETag ?? null };
    }
    return { kind: 'conflict', id: row.id, reason: `source is gone and the destination differs from the planned object (ETag ${existing.ETag})` };
  }
  if (sameObject({ size: source.ContentLength, etag: source.ETag }, dst)) {
    return { kind: 'copied', id: row.id, etag: existing.ETag ?? null };
  }
  return {
    kind: 'conflict',
    id: row.id,
    reason: `destination exists with different content (size ${existing.ContentLength} vs ${source.ContentLength}, ETag ${existing.ETag} vs ${source.ETag}); use --overwrite to replace it`,
  };
}

/** The source is gone: fine if the destination already holds it. */
async function resolveMissingSource(ctx: CopyContext, row: LedgerRow): Promise<CopyOutcome> {
  const existing = await head(ctx, ctx.config.migrate.target.bucket, row.dst_key);
  if (existing) return resolveExisting(ctx, row, existing);
  return { kind: 'missing', id: row.id, reason: 'source object does not exist' };
}

/**
 * A 412: either the destination appeared (`If-None-Match`) or the source
 * changed since the plan (`CopySourceIfMatch`).
 */
async function resolvePrecondition(ctx: CopyContext, row: LedgerRow): Promise<CopyOutcome> {
  const existing = await head(ctx, ctx.config.migrate.target.bucket, row.dst_key);
  if (existing && !ctx.config.overwrite) return resolveExisting(ctx, row, existing);
  const source = await head(ctx, ctx.config.migrate.source.bucket, row.src_key);
  if (!source) return resolveMissingSource(ctx, row);
  return {
    kind: 'failed',
    id: row.id,
    error: `source changed since plan (ETag ${row.src_etag} is now ${source.ETag}): re-run plan --list to record the new version`,
  };
}
