/**
 * Whether the S3 server honours `If-None-Match: *` on the two requests that
 * write a copy: CopyObject and CompleteMultipartUpload. AWS does (since
 * 2025-10); MinIO and versitygw 1.8.0 answer 200 and overwrite. The answer
 * decides whether `--dest-check conditional` is safe at all, and whether the
 * header narrows the window of `list` and `head` to nothing.
 *
 * Measured, not assumed: two scratch objects are written under the target
 * prefix (`<prefix>.bucket-migrate-probe/<uuid>/`), one is copied onto the
 * other with the header, then completed onto it by a one-part multipart
 * copy with the header, and both are deleted. Nothing outside the scratch
 * folder is touched. Needs `s3:DeleteObject` on that folder only (see
 * docs/PRIVILEGES.md).
 */
import { randomUUID } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  PutObjectCommand,
  UploadPartCopyCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { encodeCopySource } from '../s3/copy-source.js';
import { describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';

import type { ConditionalAnswer, ConditionalSupport } from './conditional-support.js';

export type { ConditionalAnswer, ConditionalSupport } from './conditional-support.js';
export { describeConditionalSupport } from './conditional-support.js';

/** The folder scratch objects go in, under the target prefix. */
export const PROBE_FOLDER = '.bucket-migrate-probe/';

const isPreconditionFailed = (err: unknown) => s3ErrorCode(err) === 'PreconditionFailed' || s3HttpStatus(err) === 412;

/** Runs the probe against `bucket`/`prefix` (see the module comment). */
export async function probeConditionalWrites(s3: S3Client, target: { bucket: string; prefix: string }): Promise<ConditionalSupport> {
  const base = `${target.prefix}${PROBE_FOLDER}${randomUUID()}/`;
  const existing = `${base}existing`;
  const source = `${base}source`;
  const support: ConditionalSupport = { copy: 'unknown', complete: 'unknown' };
  const notes: string[] = [];
  const put = (key: string, body: string) =>
    s3.send(new PutObjectCommand({ Bucket: target.bucket, Key: key, Body: Buffer.from(body), ContentLength: Buffer.byteLength(body) }));
  try {
    await put(existing, 'existing object');
    await put(source, 'probe');
    try {
      await s3.send(
        new CopyObjectCommand({ Bucket: target.bucket, Key: existing, CopySource: encodeCopySource(target.bucket, source), IfNoneMatch: '*' }),
      );
      support.copy = 'ignored';
    } catch (err) {
      if (isPreconditionFailed(err)) support.copy = 'honoured';
      else notes.push(`conditional CopyObject: ${describeS3Error(err)}`);
    }
    support.complete = await probeComplete(s3, target.bucket, existing, source, notes);
  } catch (err) {
    notes.push(`writing the scratch objects under ${base}: ${describeS3Error(err)}`);
  } finally {
    try {
      const deleted = await s3.send(
        new DeleteObjectsCommand({ Bucket: target.bucket, Delete: { Objects: [{ Key: existing }, { Key: source }], Quiet: true } }),
      );
      if (deleted.Errors?.length) notes.push(`could not delete the scratch objects under s3://${target.bucket}/${base}: ${deleted.Errors[0]?.Code ?? 'error'}`);
    } catch (err) {
      notes.push(`could not delete the scratch objects under s3://${target.bucket}/${base}: ${describeS3Error(err)}`);
    }
  }
  if (notes.length > 0) support.detail = notes.join('; ');
  return support;
}

async function probeComplete(s3: S3Client, bucket: string, existing: string, source: string, notes: string[]): Promise<ConditionalAnswer> {
  let uploadId: string | undefined;
  try {
    uploadId = (await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: existing }))).UploadId;
    const part = await s3.send(
      new UploadPartCopyCommand({ Bucket: bucket, Key: existing, UploadId: uploadId, PartNumber: 1, CopySource: encodeCopySource(bucket, source) }),
    );
    await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: existing,
        UploadId: uploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.CopyPartResult?.ETag }] },
        IfNoneMatch: '*',
      }),
    );
    uploadId = undefined;
    return 'ignored';
  } catch (err) {
    if (isPreconditionFailed(err)) return 'honoured';
    notes.push(`conditional CompleteMultipartUpload: ${describeS3Error(err)}`);
    return 'unknown';
  } finally {
    if (uploadId) await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: existing, UploadId: uploadId })).catch(() => undefined);
  }
}
