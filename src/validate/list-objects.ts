import { ListObjectsV2Command, type ListObjectsV2CommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { FatalError } from '../errors.js';
import { describeS3Error } from '../s3/errors.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';

/** One listed object. */
export interface ListedObject {
  key: string;
  size: number;
  etag: string | null;
}

/**
 * Every object under `prefix`, in S3's order (UTF-8 binary), a page at a
 * time. The next page is requested while the current one is consumed, so
 * at most two pages (2,000 keys) are held: memory is constant whatever the
 * bucket holds.
 */
export async function* listObjects(s3: S3Client, bucket: string, prefix: string): AsyncGenerator<ListedObject> {
  const limiter = new AdaptiveLimiter({ maxInFlight: 1 });
  const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  const fetchPage = (token: string | undefined): Promise<ListObjectsV2CommandOutput> =>
    sendWithRetry(limiter, stats, () =>
      s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: 1000 })),
    ).catch((err: unknown) => {
      throw new FatalError(`listing s3://${bucket}/${prefix} failed: ${describeS3Error(err)}`);
    });
  let next: Promise<ListObjectsV2CommandOutput> | undefined = fetchPage(undefined);
  while (next) {
    const page: ListObjectsV2CommandOutput = await next;
    next = page.IsTruncated && page.NextContinuationToken ? fetchPage(page.NextContinuationToken) : undefined;
    // Keep the prefetch from being an unhandled rejection if the consumer stops early.
    next?.catch(() => undefined);
    for (const object of page.Contents ?? []) {
      if (object.Key === undefined) continue;
      yield { key: object.Key, size: object.Size ?? 0, etag: object.ETag ?? null };
    }
  }
}

/** An ETag without the quotes some servers and SDK paths keep around it. */
export function bareEtag(etag: string | null | undefined): string | null {
  return etag ? etag.replace(/^W\//, '').replace(/"/g, '') : null;
}
