import { CopyObjectCommand, type HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import type { LedgerRow } from '../ledger/state-machine.js';
import { encodeCopySource } from '../s3/copy-source.js';
import { classifyS3Error, describeS3Error, isNotFound, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import { headIfExists } from '../s3/head-object.js';
import { multipartCopy } from '../s3/multipart-copy.js';
import {
  SSE_C_REASON,
  copyEncryption,
  copyStorageClass,
  encryptionMatches,
  isSseCError,
  readTagging,
  refusalFor,
  type CopyEncryption,
  type EncryptionHeaders,
} from './object-attributes.js';
import { sendWithRetry } from '../s3/retry.js';
import { bareEtag, namesSource, readProvenance, withProvenance } from './provenance.js';
import { etagIsMd5, factsOf, judgeCopy, verifyCopy } from './same-object.js';
import { listDestinations, listSources, type DestinationListing } from './dest-listing.js';
import type { WorkerS3 } from './copy-config.js';
import { LeaseTooShort, type LeaseClock } from '../ledger/lease-fence.js';
import { recordBytesCopied } from '../telemetry/telemetry.js';

/** What happened to one pending key's copy. */
export type CopyOutcome =
  /**
   * `made`: this copy step wrote the destination, or found there an object
   * whose provenance names this source (the ledger's `copy_made`).
   * `srcEtag`: the source ETag a clone was pinned to, from the batch's
   * listing when the plan recorded none.
   */
  | { kind: 'copied'; id: number; etag: string | null; made: boolean; srcEtag?: string | null }
  | { kind: 'conflict' | 'missing' | 'archived'; id: number; reason: string }
  /** `terminal`: retrying cannot help (verification failed, SSE-C source): failed at once. */
  | { kind: 'failed'; id: number; error: string; terminal?: boolean }
  | { kind: 'fatal'; id: number; error: string }
  /** An overwriting copy not sent: the lease was lost or left no room (src/ledger/lease-fence.ts); the key is given back as it is. */
  | { kind: 'unfenced'; id: number };


/**
 * Copies every pending row of a batch, concurrently within the limiter. With
 * `--dest-check list`, one listing of the batch's key range first tells
 * which destinations exist (see `listDestinations`). Under `--overwrite` a
 * copy may replace what is at its destination, so, like a delete, it is
 * sent only within `lease` (see {@link copyObject}).
 */
export async function copyObjects(ctx: WorkerS3, rows: LedgerRow[], lease?: Pick<LeaseClock, 'destructiveSignal'>): Promise<CopyOutcome[]> {
  const unlisted = cloning(ctx.config) ? rows.filter((r) => r.src_etag == null) : [];
  const [listing, sources] = await Promise.all([
    ctx.config.destCheck === 'list' && !ctx.config.overwrite ? listDestinations(ctx, rows) : undefined,
    unlisted.length > 0 ? listSources(ctx, unlisted) : undefined,
  ]);
  return Promise.all(rows.map((row) => copyObject(ctx, row, listing, lease, sources)));
}

/** Whether single-part copies may be clones in this run (see `CopyMode`). */
const cloning = (config: WorkerS3['config']) => config.copyMode === 'clone' && !config.overwrite && !config.sseKmsKeyId;

/**
 * The source facts a clone is made from: what `plan --list` recorded, or
 * what the batch's listing showed. Undefined when the key takes the HEAD +
 * REPLACE path: not cloning, not listed, above the multipart threshold, or
 * a multipart ETag (a listing shows `<hash>-<parts>`).
 */
function cloneFacts(config: WorkerS3['config'], row: LedgerRow, sources?: DestinationListing): { size: number; etag: string; storageClass: string | null; listedHere: boolean } | undefined {
  if (!cloning(config)) return undefined;
  const listed = row.src_etag != null ? undefined : sources?.facts(row.src_key);
  const etag = row.src_etag ?? listed?.etag ?? null;
  const size = row.src_size ?? listed?.size ?? null;
  if (etag == null || size == null || bareEtag(etag).includes('-') || bareEtag(etag) === '') return undefined;
  if (Number(size) > config.multipartThreshold) return undefined;
  return { size: Number(size), etag, storageClass: row.src_storage_class ?? listed?.storageClass ?? null, listedHere: listed !== undefined };
}

/**
 * One key, pending → copied (or conflict, missing, failed). Never overwrites
 * a different object at the destination unless `--overwrite`: the
 * destination is checked first (a HEAD, the batch's listing, or the
 * server's `If-None-Match`, on CopyObject and on CompleteMultipartUpload),
 * and an existing destination is judged by {@link judgeCopy}: this source's
 * copy counts as copied (how a resume after a crash between copy and ledger
 * update finishes), anything else is a conflict.
 *
 * The source is HEADed before every copy: the copy is pinned to that
 * version (CopySourceIfMatch), verified against it, and written with
 * `MetadataDirective: REPLACE` carrying the source's headers and user
 * metadata plus the provenance keys (src/copy/provenance.ts) that let a
 * later run recognise it as this source's copy when ETags cannot tell
 * (multipart, SSE-KMS, a source already deleted). Tags, storage class and
 * encryption are kept as well; a copy that fails verification, or a source
 * that cannot be copied (SSE-C), is `failed` at once and its source is kept.
 *
 * With `--overwrite` and a `lease`, the request that replaces the
 * destination (CopyObject, or CompleteMultipartUpload) leaves only within
 * the lease and carries its abort timeout (src/ledger/lease-fence.ts): a
 * worker that wakes past its lease does not overwrite what another worker,
 * or the application, has put there since; the key comes back `unfenced`.
 */
export async function copyObject(
  ctx: WorkerS3,
  row: LedgerRow,
  listing?: DestinationListing,
  lease?: Pick<LeaseClock, 'destructiveSignal'>,
  sources?: DestinationListing,
): Promise<CopyOutcome> {
  const { config } = ctx;
  const fenced = config.overwrite && lease ? () => lease.destructiveSignal() : () => undefined;
  const src = { bucket: config.migrate.source.bucket, key: row.src_key };
  const dst = { bucket: config.migrate.target.bucket, key: row.dst_key };
  try {
    // `head`, and `list` for a key the batch's listing did not show absent.
    if (!config.overwrite && config.destCheck !== 'conditional' && listing?.lookup(dst.key) !== 'absent') {
      const existing = await headIfExists(ctx, dst.bucket, dst.key);
      if (existing) return await resolveExisting(ctx, row, existing);
    }
    const clone = cloneFacts(config, row, sources);
    if (clone) return await cloneObject(ctx, row, clone);
    const sourceHead = await headSource(ctx, src.bucket, src.key);
    if (!sourceHead) return await resolveMissingSource(ctx, row);
    const refusal = refusalFor(sourceHead);
    if (refusal) return { kind: 'failed', id: row.id, error: refusal, terminal: true };
    if (row.src_etag && bareEtag(sourceHead.ETag) !== bareEtag(row.src_etag)) {
      return { kind: 'failed', id: row.id, error: `source changed since plan (ETag ${row.src_etag} is now ${sourceHead.ETag}): re-run plan --list to record the new version` };
    }
    const size = sourceHead.ContentLength ?? row.src_size ?? 0;
    const encryption = copyEncryption(sourceHead, config);
    const storageClass = copyStorageClass(row.src_storage_class ?? sourceHead.StorageClass, config);
    const metadata = withProvenance(sourceHead.Metadata, src, sourceHead.ETag);
    // The size the plan listed, when it did: a copy that disagrees with it is not the object the plan saw.
    const expected = { size: row.src_size ?? sourceHead.ContentLength, etag: sourceHead.ETag, encryption: sourceHead };
    if (size > config.multipartThreshold) {
      // HEAD reports x-amz-tagging-count where the server sends it: skip the read when it says none.
      const tagging = sourceHead.TagCount === 0 ? undefined : await readTagging(ctx.s3, ctx.limiter, ctx.stats, src.bucket, src.key);
      const etag = await multipartCopy(ctx.s3, ctx.limiter, ctx.stats, {
        sourceBucket: src.bucket,
        sourceKey: src.key,
        targetBucket: dst.bucket,
        targetKey: dst.key,
        source: sourceHead,
        partSize: config.partSize,
        metadata,
        overwrite: config.overwrite,
        completeSignal: fenced,
        attributes: { ...encryption, StorageClass: storageClass, Tagging: tagging },
      });
      recordBytesCopied(size);
      // A multipart ETag is not an MD5: the destination's size is the check.
      const copy = await headIfExists(ctx, dst.bucket, dst.key);
      const verdict = verifyCopy(expected, { size: copy?.ContentLength ?? -1, etag: copy?.ETag, encryption: copy });
      if (verdict.ok !== true) return verificationFailed(row, verdict);
      if (copy && !encryptionMatches(encryption, copy)) return verificationFailed(row, encryptionMismatch(encryption, copy));
      return { kind: 'copied', id: row.id, etag: etag ?? copy?.ETag ?? null, made: true };
    }
    const copied = await sendWithRetry(ctx.limiter, ctx.stats, () =>
      ctx.s3.send(
        new CopyObjectCommand({
          Bucket: dst.bucket,
          Key: dst.key,
          CopySource: encodeCopySource(src.bucket, src.key),
          // Pins the copy to the version HEADed, which is the one verified against and named in its metadata.
          CopySourceIfMatch: sourceHead.ETag,
          IfNoneMatch: config.overwrite ? undefined : '*',
          // REPLACE, to add the provenance: every header and user metadata key of the source is sent back.
          MetadataDirective: 'REPLACE',
          ContentType: sourceHead.ContentType,
          CacheControl: sourceHead.CacheControl,
          ContentDisposition: sourceHead.ContentDisposition,
          ContentEncoding: sourceHead.ContentEncoding,
          ContentLanguage: sourceHead.ContentLanguage,
          Expires: sourceHead.Expires,
          WebsiteRedirectLocation: sourceHead.WebsiteRedirectLocation,
          Metadata: metadata,
          TaggingDirective: 'COPY',
          StorageClass: storageClass,
          ...encryption,
        }),
        { abortSignal: fenced() },
      ),
    );
    recordBytesCopied(size);
    let verdict = verifyCopy(expected, { etag: copied.CopyObjectResult?.ETag, encryption: copied });
    if (verdict.ok === 'need-size') {
      const copy = await headIfExists(ctx, dst.bucket, dst.key);
      verdict = verifyCopy(expected, { size: copy?.ContentLength ?? -1, etag: copy?.ETag, encryption: copy });
    }
    if (verdict.ok !== true) return verificationFailed(row, verdict);
    if (!encryptionMatches(encryption, copied)) return verificationFailed(row, encryptionMismatch(encryption, copied));
    return { kind: 'copied', id: row.id, etag: copied.CopyObjectResult?.ETag ?? null, made: true };
  } catch (err) {
    if (err instanceof LeaseTooShort) return { kind: 'unfenced', id: row.id };
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

/**
 * `--copy-mode clone`: one CopyObject that copies the source as it is
 * (its headers, user metadata and tags: the COPY directives), pinned to the
 * listed ETag, so what is copied is the version the listing saw (a 412
 * otherwise, resolved as any). Storage class is kept from the listing.
 *
 * The returned ETag proves the copy: a single-part copy's ETag is the MD5
 * of its bytes, so equal to the listed one when the listed one was an MD5
 * too. It is not when the source is SSE-KMS (per object: a KMS-default
 * source bucket never clones, see src/copy/copy-mode.ts): the copy is then
 * judged with a HEAD of each side, as `replace` would have made it, and
 * kept if it is right; otherwise it is failed at once and left for
 * inspection, like any copy that fails verification.
 */
async function cloneObject(ctx: WorkerS3, row: LedgerRow, clone: NonNullable<ReturnType<typeof cloneFacts>>): Promise<CopyOutcome> {
  const { config } = ctx;
  const src = { bucket: config.migrate.source.bucket, key: row.src_key };
  const dst = { bucket: config.migrate.target.bucket, key: row.dst_key };
  const pinned = `"${bareEtag(clone.etag)}"`;
  const copied = await sendWithRetry(ctx.limiter, ctx.stats, () =>
    ctx.s3.send(
      new CopyObjectCommand({
        Bucket: dst.bucket,
        Key: dst.key,
        CopySource: encodeCopySource(src.bucket, src.key),
        CopySourceIfMatch: pinned,
        IfNoneMatch: '*',
        MetadataDirective: 'COPY',
        TaggingDirective: 'COPY',
        StorageClass: copyStorageClass(clone.storageClass, config),
      }),
    ),
  );
  recordBytesCopied(clone.size);
  const srcEtag = clone.listedHere ? pinned : null;
  const etag = copied.CopyObjectResult?.ETag ?? null;
  if (bareEtag(etag) === bareEtag(clone.etag) && etagIsMd5(etag, copied)) return { kind: 'copied', id: row.id, etag, made: true, srcEtag };
  // Not proven by the ETag: judged as the HEAD + REPLACE path would have made it.
  const [sourceHead, copy] = await Promise.all([headSource(ctx, src.bucket, src.key), headIfExists(ctx, dst.bucket, dst.key)]);
  const wanted = sourceHead ? copyEncryption(sourceHead, config) : {};
  const verdict = verifyCopy(
    { size: clone.size, etag: sourceHead && bareEtag(sourceHead.ETag) === bareEtag(clone.etag) ? sourceHead.ETag : undefined, encryption: sourceHead },
    { size: copy?.ContentLength ?? -1, etag: copy?.ETag, encryption: copy },
  );
  if (verdict.ok !== true) return verificationFailed(row, verdict);
  if (!copy || !encryptionMatches(wanted, copy)) return verificationFailed(row, encryptionMismatch(wanted, copy ?? {}), CLONE_HINT);
  return { kind: 'copied', id: row.id, etag: copy.ETag ?? etag, made: true, srcEtag };
}

const CLONE_HINT = 'the source is encrypted per object in a way a listing cannot show: delete the copy, then run execute --copy-mode replace --retry-failed';

/** A HEAD of the source answered with a bare 400: on S3 that is an SSE-C object read without its key. */
class SseCRefusal extends Error {}

async function headSource(ctx: WorkerS3, bucket: string, key: string): Promise<HeadObjectCommandOutput | undefined> {
  try {
    return await headIfExists(ctx, bucket, key);
  } catch (err) {
    if (isSseCError(err, true)) throw new SseCRefusal(describeS3Error(err));
    throw err;
  }
}

function verificationFailed(row: LedgerRow, verdict: { ok: false; reason: string } | { ok: 'need-size' }, hint?: string): CopyOutcome {
  const reason = verdict.ok === false ? verdict.reason : 'copy verification failed: the destination size could not be read';
  // Terminal at once: retrying would meet our own bad copy as a conflict.
  return { kind: 'failed', id: row.id, error: `${reason}; the source is kept and the destination copy left for inspection${hint ? `; ${hint}` : ''}`, terminal: true };
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

/**
 * The destination exists: this source's copy is a resume, anything else a
 * conflict (see {@link judgeCopy}). Without a source, it is judged against
 * what the plan listed, and accepted only with evidence that it is this
 * source's copy.
 */
async function resolveExisting(ctx: WorkerS3, row: LedgerRow, existing: HeadObjectCommandOutput): Promise<CopyOutcome> {
  const sourceRef = { bucket: ctx.config.migrate.source.bucket, key: row.src_key };
  const source = await headIfExists(ctx, sourceRef.bucket, sourceRef.key);
  const verdict = judgeCopy(
    sourceRef,
    source ? { fresh: factsOf(source) } : { planned: { size: row.src_size, etag: row.src_etag } },
    factsOf(existing),
  );
  // Ours to delete on revert only if its provenance names this source (see migration 0010-copy-made).
  if (verdict.same) return { kind: 'copied', id: row.id, etag: existing.ETag ?? null, made: namesSource(readProvenance(existing.Metadata), sourceRef) };
  const gone = source ? '' : 'source is gone and ';
  return {
    kind: 'conflict',
    id: row.id,
    // The ETags quoted, as S3 writes them: report groups reasons with the quoted parts blanked.
    reason: `${gone}destination exists with different content: ${verdict.reason} (destination size ${existing.ContentLength} ETag ${existing.ETag}, source ${source ? `size ${source.ContentLength} ETag ${source.ETag}` : `as planned size ${row.src_size ?? 'unknown'} ETag ${row.src_etag ? `"${bareEtag(row.src_etag)}"` : 'unknown'}`}); use --overwrite to replace it`,
  };
}

/** The source is gone: fine if the destination already holds it. */
async function resolveMissingSource(ctx: WorkerS3, row: LedgerRow): Promise<CopyOutcome> {
  const existing = await headIfExists(ctx, ctx.config.migrate.target.bucket, row.dst_key);
  if (existing) return resolveExisting(ctx, row, existing);
  return { kind: 'missing', id: row.id, reason: 'source object does not exist' };
}

/**
 * A 412: either the destination appeared (`If-None-Match`) or the source
 * changed since the plan (`CopySourceIfMatch`).
 */
async function resolvePrecondition(ctx: WorkerS3, row: LedgerRow): Promise<CopyOutcome> {
  const existing = await headIfExists(ctx, ctx.config.migrate.target.bucket, row.dst_key);
  if (existing && !ctx.config.overwrite) return resolveExisting(ctx, row, existing);
  const source = await headIfExists(ctx, ctx.config.migrate.source.bucket, row.src_key);
  if (!source) return resolveMissingSource(ctx, row);
  return {
    kind: 'failed',
    id: row.id,
    error: `source changed since plan (ETag ${row.src_etag} is now ${source.ETag}): re-run plan --list to record the new version`,
  };
}
