/**
 * The listing phase: --listing-count one-byte objects in bucket C, listed by
 * one chain and by --list-ranges key ranges at once, both through a proxy
 * that adds 30 ms to every request (AWS-like latency on a local server).
 */
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { createS3Client } from '../../src/s3/client.js';
import { startFaultProxy } from '../../test/support/fault-proxy.js';
import { emptyBucket, type BenchContext } from './bench-context.js';
import { listingSpeed, seedListing } from './scale.js';

/** Seconds for one chain and for the ranges, and how many keys. */
export interface ListingResult {
  single: number;
  parallel: number;
  count: number;
}

export async function runListing(ctx: BenchContext): Promise<ListingResult> {
  const { options } = ctx;
  const bucket = ctx.buckets[2]!;
  ctx.log(`listing: seeding ${options.listingCount} one-byte objects`);
  await ctx.client.send(new CreateBucketCommand({ Bucket: bucket })).catch(() => undefined);
  const keys = await seedListing(ctx.client, bucket, 'list/', options.listingCount);
  const proxy = await startFaultProxy(ctx.s3.endpoint, { latencyMs: 30 });
  const slow = createS3Client({ endpoint: proxy.endpoint, region: ctx.s3.region, forcePathStyle: true }, { maxSockets: 4 * options.listRanges });
  try {
    const measured = await listingSpeed(slow, bucket, 'list/', keys, options.listRanges);
    ctx.log(`listing ${options.listingCount} keys at +30 ms: one chain ${measured.single.toFixed(1)} s, ${options.listRanges} ranges ${measured.parallel.toFixed(1)} s`);
    return { ...measured, count: options.listingCount };
  } finally {
    slow.destroy();
    await proxy.close();
    await emptyBucket(ctx.client, bucket);
  }
}
