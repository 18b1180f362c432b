import { CopyObjectCommand, HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import type { LedgerRow } from '../ledger/state-machine.js';
import { encodeCopySource } from '../s3/copy-source.js';
import { classifyS3Error, describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import type { AdaptiveLimiter } from '../s3/limiter.js';
import { multipartCopy } from '../s3/multipart-copy.js';
import {
  SSE_C_REASON,
  copyEncryption,
  copyStorageClass,
  encryptionMatches,
  isSseCError,
  readTagging,
  refusalFor,
  verifyCopy,
  type CopyEncryption,
  type EncryptionHeaders,
} from '../s3/object-attributes.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { listDestinations, type DestinationListing } from './dest-listing.js';
import { MAX_SINGLE_COPY, type ExecuteConfig } from './execute-config.js';
import { recordBytesCopied } from './telemetry.js';

/** What happened to one pending key's copy. */
export type CopyOutcome =
  | { kind: 'copied'; id: number; etag: string | null }
  | { kind: 'conflict' | 'missing' | 'archived'; id: number; reason: string }
  /** `terminal`: retrying cannot help (verification failed, SSE-C source): failed at once. */
  | { kind: 'failed'; id: number; error: string; terminal?: boolean }
  | { kind: 'fatal'; id: number; error: string };

/** The S3 side of a worker: its client, limiter and counters. */
export interface CopyContext {
  s3: S3Client;
  limiter: AdaptiveLimiter;
  stats: RequestStats;
  config: ExecuteConfig;
}

/**
 * Copies every pending row of a batch, concurrently within the limiter. With
 * `--dest-check list`, one listing of the batch's key range first tells
 * which destinations exist (see `listDestinations`).
 */
export async function copyObjects(ctx: CopyContext, rows: LedgerRow[]): Promise<CopyOutcome[]> {
  const listing = ctx.config.destCheck === 'list' && !ctx.config.overwrite ? await listDestinations(ctx, rows) : undefined;
  return Promise.all(rows.map((row) => copyObject(ctx, row, listing)));
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
 * destination is checked first (a HEAD, the batch's listing, or the
 * server's `If-None-Match`),
 * and an identical object there counts as copied, which is how a resume
 * after a crash between copy and ledger update finishes.
 *
 * The copy keeps the object's headers, user metadata, tags, storage class and
 * encryption, and is verified against the source before it counts (see
 * {@link verifyCopy}); a copy that fails verification, or a source that
 * cannot be copied (SSE-C), is `failed` at once and its source is kept.
 *
 * A HEAD of the source is made only when needed:
 * - for a multipart copy (its headers and tags must be re-sent);
 * - when the ledger does not know the source's storage class (no
 *   `plan --list`) and `--storage-class` does not set it: without it S3
 *   would silently write STANDARD. That HEAD also pins the copy to the
 *   HEADed ETag, verifies it, and keeps SSE-KMS keys;
 * - when a single-part ETag check fails and the source's encryption is not
 *   known (a KMS-encrypted source's ETag is not an MD5).
 * So a listed key, or an unlisted one with `--storage-class`, costs no
 * extra request. An unlisted key copied without a HEAD has nothing to be
 * verified against: only its copy's ETag is recorded.
 */
export async function copyObject(ctx: CopyContext, row: LedgerRow, listing?: DestinationListing): Promise<CopyOutcome> {
  const { config } = ctx;
  const src = { bucket: config.migrate.source.bucket, key: row.src_key };
  const dst = { bucket: config.migrate.target.bucket, key: row.dst_key };
  try {
    let sourceHead: HeadObjectCommandOutput | undefined;
    // `head`, and `list` for a key the batch's listing did not show absent.
    if (!config.overwrite && config.destCheck !== 'conditional' && listing?.lookup(dst.key) !== 'absent') {
      const existing = await head(ctx, dst.bucket, dst.key);
      if (existing) return await resolveExisting(ctx, row, existing);
    }
    const knownSize = row.src_size;
    const mayNeedParts = config.multipartThreshold < MAX_SINGLE_COPY;
    const classUnknown = row.src_storage_class == null && !config.storageClass;
    if ((knownSize == null && mayNeedParts) || classUnknown) {
      sourceHead = await headSource(ctx, src.bucket, src.key);
      if (!sourceHead) return await resolveMissingSource(ctx, row);
    }
    const refusal = sourceHead && refusalFor(sourceHead);
    if (refusal) return { kind: 'failed', id: row.id, error: refusal, terminal: true };
    const size = knownSize ?? sourceHead?.ContentLength ?? 0;
    if (size > config.multipartThreshold) {
      sourceHead ??= await headSource(ctx, src.bucket, src.key);
      if (!sourceHead) return await resolveMissingSource(ctx, row);
      const refused = refusalFor(sourceHead);
      if (refused) return { kind: 'failed', id: row.id, error: refused, terminal: true };
      if (row.src_etag && sourceHead.ETag !== row.src_etag) {
        return { kind: 'failed', id: row.id, error: `source changed since plan (ETag ${row.src_etag} is now ${sourceHead.ETag}): re-run plan --list` };
      }
      const encryption = copyEncryption(sourceHead, config);
      // HEAD reports x-amz-tagging-count where the server sends it: skip the read when it says none.
      const tagging = sourceHead.TagCount === 0 ? undefined : await readTagging(ctx.s3, ctx.limiter, ctx.stats, src.bucket, src.key);
      const etag = await multipartCopy(ctx.s3, ctx.limiter, ctx.stats, {
        sourceBucket: src.bucket,
        sourceKey: src.key,
        targetBucket: dst.bucket,
        targetKey: dst.key,
        source: sourceHead,
        partSize: config.partSize,
        attributes: {
          ...encryption,
          StorageClass: copyStorageClass(row.src_storage_class ?? sourceHead.StorageClass, config),
          Tagging: tagging,
        },
      });
      // A multipart ETag is not an MD5: the destination's size is the check.
      const copy = await head(ctx, dst.bucket, dst.key);
      const verdict = verifyCopy(
        { size: knownSize ?? sourceHead.ContentLength, etag: sourceHead.ETag, encryption: sourceHead },
        { size: copy?.ContentLength ?? -1, etag: copy?.ETag, encryption: copy },
      );
      if (verdict.ok !== true) return verificationFailed(row, verdict);
      if (copy && !encryptionMatches(encryption, copy)) return verificationFailed(row, encryptionMismatch(encryption, copy));
      recordBytesCopied(size);
      return { kind: 'copied', id: row.id, etag: etag ?? null };
    }
    const expectedEtag = row.src_etag ?? sourceHead?.ETag;
    const storageClass = copyStorageClass(row.src_storage_class ?? sourceHead?.StorageClass, config);
    const copyOnce = (encryption: CopyEncryption, overwrite: boolean) =>
      sendWithRetry(ctx.limiter, ctx.stats, () =>
        ctx.s3.send(
          new CopyObjectCommand({
            Bucket: dst.bucket,
            Key: dst.key,
            CopySource: encodeCopySource(src.bucket, src.key),
            // Pins the copy to the version listed or HEADed, which is the one verified against.
            CopySourceIfMatch: expectedEtag,
            IfNoneMatch: overwrite ? undefined : '*',
            MetadataDirective: 'COPY',
            TaggingDirective: 'COPY',
            StorageClass: storageClass,
            ...encryption,
          }),
        ),
      );
    let encryption = copyEncryption(sourceHead, config);
    let copied = await copyOnce(encryption, config.overwrite);
    const expected = () => ({ size: knownSize ?? sourceHead?.ContentLength, etag: expectedEtag, encryption: sourceHead });
    recordBytesCopied(size);
    if (expectedEtag == null && expected().size == null) {
      // Neither listed nor HEADed: nothing to verify against.
      return { kind: 'copied', id: row.id, etag: copied.CopyObjectResult?.ETag ?? null };
    }
    let verdict = verifyCopy(expected(), { etag: copied.CopyObjectResult?.ETag, encryption: copied });
    if (verdict.ok === false && !sourceHead) {
      // The listing does not say how the source is encrypted, and a KMS
      // source's ETag is not an MD5: find out before calling it a mismatch.
      sourceHead = await headSource(ctx, src.bucket, src.key);
      if (!sourceHead) return { kind: 'failed', id: row.id, error: 'copy: the source disappeared while its copy was verified' };
      const wanted = copyEncryption(sourceHead, config);
      if (!encryptionMatches(wanted, copied)) {
        // Our own fresh copy came out with the target bucket's default
        // encryption: copy again, over it, with the source's.
        encryption = wanted;
        copied = await copyOnce(encryption, true);
      }
      verdict = verifyCopy(expected(), { etag: copied.CopyObjectResult?.ETag, encryption: copied });
    }
    if (verdict.ok === 'need-size') {
      const copy = await head(ctx, dst.bucket, dst.key);
      verdict = verifyCopy(expected(), { size: copy?.ContentLength ?? -1, etag: copy?.ETag, encryption: copy });
    }
    if (verdict.ok !== true) return verificationFailed(row, verdict);
    if (!encryptionMatches(encryption, copied)) return verificationFailed(row, encryptionMismatch(encryption, copied));
    return { kind: 'copied', id: row.id, etag: copied.CopyObjectResult?.ETag ?? null };
  } catch (err) {
    if (err instanceof SseCRefusal || isSseCError(err, false)) return { kind: 'failed', id: row.id, error: SSE_C_REASON, terminal: true };
    // A 403 is otherwise fatal, but this one is about the object only.
    if (s3ErrorCode(err) === 'InvalidObjectState') {
      const cls = row.src_storage_class ? ` (${row.src_storage_class})` : '';
      return { kind: 'archived', id: row.id, reason: `source is in an archive storage class${cls}: restore it, then re-queue the key (${describeS3Error(err)})` };
    }
    if (isNotFound(err) && s3ErrorCode(err) !== 'NoSuchBucket') return resolveMissingSource(ctx, row).catch((e) => failure(row, e));
    if (s3ErrorCode(err) === 'PreconditionFailed' || s3HttpStatus(err) === 412) {
      return resolvePrecondition(ctx, row).catch((e) => failure(row, e));
    }
    return failure(row, err);
  }
}

/** A HEAD of the source answered with a bare 400: on S3 that is an SSE-C object read without its key. */
class SseCRefusal extends Error {}

async function headSource(ctx: CopyContext, bucket: string, key: string): Promise<HeadObjectCommandOutput | undefined> {
  try {
    return await head(ctx, bucket, key);
  } catch (err) {
    if (isSseCError(err, true)) throw new SseCRefusal(describeS3Error(err));
    throw err;
  }
}

function verificationFailed(row: LedgerRow, verdict: { ok: false; reason: string } | { ok: 'need-size' }): CopyOutcome {
  const reason = verdict.ok === false ? verdict.reason : 'copy verification failed: the destination size could not be read';
  // Terminal at once: retrying would meet our own bad copy as a conflict.
  return { kind: 'failed', id: row.id, error: `${reason}; the source is kept and the destination copy left for inspection`, terminal: true };
}

function encryptionMismatch(wanted: CopyEncryption, got: EncryptionHeaders): { ok: false; reason: string } {
  return {
    ok: false,
    reason: `copy verification failed: destination encryption ${got.ServerSideEncryption ?? 'none'} ${got.SSEKMSKeyId ?? ''} is not the requested ${wanted.ServerSideEncryption} ${wanted.SSEKMSKeyId ?? ''}`.replace(/\s+/g, ' '),
  };
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
