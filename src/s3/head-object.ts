import { HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { isNotFound } from './errors.js';
import type { AdaptiveLimiter } from './limiter.js';
import { sendWithRetry, type RequestStats } from './retry.js';

/** An S3 client with the limiter and the counters its requests go through. */
export interface S3Lane {
  s3: S3Client;
  limiter: AdaptiveLimiter;
  stats: RequestStats;
}

/**
 * HEADs one object through the lane's limiter, retrying transient failures.
 * Returns `undefined` when the object does not exist; every other error is
 * thrown, so "absent" is never confused with "could not tell".
 */
export async function headIfExists(lane: S3Lane, bucket: string, key: string): Promise<HeadObjectCommandOutput | undefined> {
  try {
    return await sendWithRetry(lane.limiter, lane.stats, () => lane.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}
