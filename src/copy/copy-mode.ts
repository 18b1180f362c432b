/**
 * The run's copy mode, decided once at the start of `execute` (see
 * `CopyMode` in src/copy/copy-config.ts).
 *
 * `clone` proves each copy by its returned ETag, which works when the
 * source's ETag is the MD5 of its bytes. A listing cannot tell an SSE-KMS
 * object's ETag (not an MD5) from an MD5, so a source bucket whose default
 * encryption is SSE-KMS never clones: one GetBucketEncryption says so.
 * A server without bucket encryption (404, 501) has no such default. When
 * the answer cannot be read (403: the policy lacks
 * `s3:GetEncryptionConfiguration`), the run copies with `replace`, and
 * says so and how to change it.
 */
import { GetBucketEncryptionCommand, type S3Client } from '@aws-sdk/client-s3';
import type { CopyConfig, CopyMode } from './copy-config.js';
import { describeS3Error, s3ErrorCode, s3HttpStatus } from '../s3/errors.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';

/** The mode a run copies with, and the start line saying why when it is not the one asked for. */
export interface CopyModeChoice {
  mode: CopyMode;
  note?: string;
}

/** Decides the copy mode of a run asking for `config.copyMode`. */
export async function chooseCopyMode(s3: S3Client, config: CopyConfig): Promise<CopyModeChoice> {
  if (config.copyMode !== 'clone') return { mode: 'replace' };
  if (config.overwrite) return { mode: 'replace', note: 'note: --overwrite copies with HEAD + REPLACE (2 requests per key): --copy-mode clone applies only without it' };
  if (config.sseKmsKeyId) return { mode: 'replace', note: 'note: --sse-kms-key-id copies with HEAD + REPLACE (2 requests per key): a KMS copy\'s ETag cannot prove a clone' };
  const bucket = config.migrate.source.bucket;
  try {
    const limiter = new AdaptiveLimiter({ maxInFlight: 1 });
    const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
    const answer = await sendWithRetry(limiter, stats, () => s3.send(new GetBucketEncryptionCommand({ Bucket: bucket })));
    const kms = (answer.ServerSideEncryptionConfiguration?.Rules ?? []).some((r) => /kms/i.test(r.ApplyServerSideEncryptionByDefault?.SSEAlgorithm ?? ''));
    if (kms) return { mode: 'replace', note: `note: s3://${bucket} defaults to SSE-KMS, whose ETags are not MD5s: copying with HEAD + REPLACE (2 requests per key)` };
    return { mode: 'clone' };
  } catch (err) {
    const status = s3HttpStatus(err);
    if (status === 404 || status === 501 || /NotFound|NotImplemented/.test(s3ErrorCode(err) ?? '')) return { mode: 'clone' };
    return {
      mode: 'replace',
      note: `note: could not read the default encryption of s3://${bucket} (${describeS3Error(err)}): copying with HEAD + REPLACE (2 requests per key); grant s3:GetEncryptionConfiguration on it to clone, or pass --copy-mode replace`,
    };
  }
}
