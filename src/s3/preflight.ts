import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { LocationConfig } from '../config/config.js';
import { UsageError } from '../errors.js';
import { describeS3Error, s3ErrorCode, s3HttpStatus } from './errors.js';
import { AdaptiveLimiter } from './limiter.js';
import { sendWithRetry, type RequestStats } from './retry.js';

/**
 * Checks that a location can be listed before any work starts, so a wrong
 * bucket, endpoint or credential is one clear line (exit 2), not a thousand
 * failed keys. It lists with the prefix, which is what a least-privilege
 * policy (`s3:ListBucket` with an `s3:prefix` condition) allows.
 */
export async function checkLocation(s3: S3Client, location: LocationConfig, setting: 'SOURCE_BUCKET' | 'TARGET_BUCKET'): Promise<void> {
  try {
    // Retried like every other request: one 503 or reset at start-up is not a configuration error.
    const limiter = new AdaptiveLimiter({ maxInFlight: 1 });
    const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
    await sendWithRetry(limiter, stats, () => s3.send(new ListObjectsV2Command({ Bucket: location.bucket, Prefix: location.prefix, MaxKeys: 1 })));
  } catch (err) {
    throw new UsageError(explainS3Failure(err, location.bucket, setting));
  }
}

/** One line saying what is wrong with an S3 setup, and what to do. */
export function explainS3Failure(err: unknown, bucket: string, setting: string): string {
  const code = s3ErrorCode(err);
  const status = s3HttpStatus(err);
  if (code === 'NoSuchBucket') return `${setting} ${bucket} does not exist: create it or fix ${setting}`;
  if (code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch') {
    return `S3 rejected the credentials (${code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE`;
  }
  if (code === 'AccessDenied' || status === 403) {
    return `access denied listing s3://${bucket}: grant the permissions in docs/PRIVILEGES.md, or check the credentials`;
  }
  if (code === 'CredentialsProviderError' || /credential/i.test(String((err as Error)?.message))) {
    return 'no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE';
  }
  if (/region/i.test(String((err as Error)?.message)) && !status) return 'no AWS region configured: set AWS_REGION';
  if (!status) return `cannot reach S3 (${describeS3Error(err)}): check S3_ENDPOINT and the network`;
  return `S3 error on s3://${bucket}: ${describeS3Error(err)}`;
}
