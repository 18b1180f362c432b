import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  UploadPartCopyCommand,
  type CreateMultipartUploadCommandInput,
  type HeadObjectCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { encodeCopySource } from './copy-source.js';
import type { AdaptiveLimiter } from './limiter.js';
import { sendWithRetry, type RequestStats } from './retry.js';

const MIN_PART = 5 * 1024 ** 2;
const MAX_PARTS = 10_000;

/** One multipart copy. */
export interface MultipartCopyRequest {
  sourceBucket: string;
  sourceKey: string;
  targetBucket: string;
  targetKey: string;
  /** The source's HEAD, for its size, ETag and the headers to keep. */
  source: HeadObjectCommandOutput;
  partSize: number;
  /**
   * What CreateMultipartUpload must be told to keep the rest of the object:
   * a multipart upload has no COPY directive for class, encryption or tags.
   */
  attributes?: Pick<CreateMultipartUploadCommandInput, 'StorageClass' | 'ServerSideEncryption' | 'SSEKMSKeyId' | 'Tagging'>;
  /** The copy's user metadata (default: the source's). */
  metadata?: Record<string, string>;
  /**
   * Replace an existing object at the target (`--overwrite`). Otherwise
   * CompleteMultipartUpload carries `If-None-Match: *`: on a server that
   * honours it, an object that appeared at the target meanwhile makes it
   * fail with 412 instead of being replaced.
   */
  overwrite?: boolean;
  /**
   * Called as CompleteMultipartUpload, the request that makes the object,
   * is about to leave (and on each retry): the abort signal it carries, or
   * a throw that keeps it from leaving (the caller's lease fence).
   */
  completeSignal?: () => AbortSignal | undefined;
}

/**
 * Copies an object in parts with `UploadPartCopy`, server-side. Every part is
 * conditional on the source ETag, so a source replaced mid-copy fails the
 * copy instead of stitching two versions together. The completion is
 * conditional on the target not existing (unless `overwrite`), like a
 * single CopyObject. The upload is aborted on any failure (a 412 included),
 * leaving no orphaned parts behind.
 */
export async function multipartCopy(
  s3: S3Client,
  limiter: AdaptiveLimiter,
  stats: RequestStats,
  request: MultipartCopyRequest,
): Promise<string | undefined> {
  const size = request.source.ContentLength ?? 0;
  const partSize = Math.max(MIN_PART, request.partSize, Math.ceil(size / MAX_PARTS));
  const source = request.source;
  const created = await sendWithRetry(limiter, stats, () =>
    s3.send(
      new CreateMultipartUploadCommand({
        Bucket: request.targetBucket,
        Key: request.targetKey,
        ContentType: source.ContentType,
        CacheControl: source.CacheControl,
        ContentDisposition: source.ContentDisposition,
        ContentEncoding: source.ContentEncoding,
        ContentLanguage: source.ContentLanguage,
        Expires: source.Expires,
        Metadata: request.metadata ?? source.Metadata,
        ...request.attributes,
      }),
    ),
  );
  const uploadId = created.UploadId!;
  try {
    const ranges: Array<{ part: number; start: number; end: number }> = [];
    for (let start = 0, part = 1; start < size; start += partSize, part++) {
      ranges.push({ part, start, end: Math.min(size, start + partSize) - 1 });
    }
    const parts = await Promise.all(
      ranges.map(async ({ part, start, end }) => {
        const copied = await sendWithRetry(limiter, stats, () =>
          s3.send(
            new UploadPartCopyCommand({
              Bucket: request.targetBucket,
              Key: request.targetKey,
              UploadId: uploadId,
              PartNumber: part,
              CopySource: encodeCopySource(request.sourceBucket, request.sourceKey),
              CopySourceRange: `bytes=${start}-${end}`,
              CopySourceIfMatch: source.ETag,
            }),
          ),
        );
        return { PartNumber: part, ETag: copied.CopyPartResult?.ETag };
      }),
    );
    const completed = await sendWithRetry(limiter, stats, () =>
      s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: request.targetBucket,
          Key: request.targetKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
          IfNoneMatch: request.overwrite ? undefined : '*',
        }),
        { abortSignal: request.completeSignal?.() },
      ),
    );
    return completed.ETag;
  } catch (err) {
    await s3
      .send(new AbortMultipartUploadCommand({ Bucket: request.targetBucket, Key: request.targetKey, UploadId: uploadId }))
      .catch(() => undefined);
    throw err;
  }
}
