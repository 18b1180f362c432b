/**
 * The S3 server's ceiling for this job, with no database: list the prefix,
 * CopyObject every key at high concurrency over keep-alive sockets, then
 * DeleteObjects 1,000 keys at a time. Run as its own process by the
 * benchmark, so it has a core to itself just as `execute` does.
 *
 *   node dist/scripts/bench/ceiling.js --source-bucket B --target-bucket B2 \
 *     --source-prefix image/ --target-prefix avatar/ --concurrency 128
 *
 * Credentials and endpoint come from the environment (S3_ENDPOINT, AWS_*).
 * Prints one JSON line: objects, seconds per phase, objects per second.
 */
import { parseArgs } from 'node:util';
import { CopyObjectCommand, DeleteObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createS3Client } from '../../src/s3/client.js';

export interface CeilingResult {
  objects: number;
  concurrency: number;
  listSeconds: number;
  copySeconds: number;
  deleteSeconds: number;
  seconds: number;
  objectsPerSecond: number;
  copiesPerSecond: number;
  requests: number;
  errors: number;
  /** This process's peak RSS and CPU time. */
  maxRssKiB: number;
  cpuSeconds: number;
}

const encode = (bucket: string, key: string) => `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;

export async function measureCeiling(options: {
  sourceBucket: string;
  targetBucket: string;
  sourcePrefix: string;
  targetPrefix: string;
  concurrency: number;
  deleteConcurrency?: number;
}): Promise<CeilingResult> {
  // The very client the tool builds: same SDK settings, keep-alive sockets
  // sized to the concurrency.
  const endpoint = process.env.S3_ENDPOINT;
  const s3 = createS3Client(
    { endpoint, region: process.env.AWS_REGION ?? 'us-east-1', forcePathStyle: endpoint !== undefined },
    { maxSockets: options.concurrency },
  );
  let requests = 0;
  let errors = 0;
  // The client makes one attempt (as the tool's does); a transient error is
  // retried here a few times so one hiccup does not spoil the measurement.
  const send = async <T>(fn: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        if (attempt >= 4 || (status !== undefined && status < 500)) throw err;
        requests++;
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
      }
    }
  };
  try {
    const started = performance.now();
    const keys: string[] = [];
    let token: string | undefined;
    do {
      requests++;
      const page = await s3.send(
        new ListObjectsV2Command({ Bucket: options.sourceBucket, Prefix: options.sourcePrefix, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    const listed = performance.now();

    let next = 0;
    const copyLane = async () => {
      for (;;) {
        const i = next++;
        if (i >= keys.length) return;
        const key = keys[i]!;
        requests++;
        try {
          await send(() => s3.send(
            new CopyObjectCommand({
              Bucket: options.targetBucket,
              Key: options.targetPrefix + key.slice(options.sourcePrefix.length),
              CopySource: encode(options.sourceBucket, key),
            }),
          ));
        } catch {
          errors++;
        }
      }
    };
    await Promise.all(Array.from({ length: options.concurrency }, copyLane));
    const copied = performance.now();

    const chunks: string[][] = [];
    for (let i = 0; i < keys.length; i += 1000) chunks.push(keys.slice(i, i + 1000));
    let nextChunk = 0;
    const deleteLane = async () => {
      for (;;) {
        const chunk = chunks[nextChunk++];
        if (!chunk) return;
        requests++;
        const result = await send(() =>
          s3.send(new DeleteObjectsCommand({ Bucket: options.sourceBucket, Delete: { Objects: chunk.map((Key) => ({ Key })), Quiet: true } })),
        );
        errors += result.Errors?.length ?? 0;
      }
    };
    await Promise.all(Array.from({ length: options.deleteConcurrency ?? 4 }, deleteLane));
    const deleted = performance.now();
    const seconds = (deleted - started) / 1000;
    const usage = process.resourceUsage();
    return {
      objects: keys.length,
      concurrency: options.concurrency,
      listSeconds: (listed - started) / 1000,
      copySeconds: (copied - listed) / 1000,
      deleteSeconds: (deleted - copied) / 1000,
      seconds,
      objectsPerSecond: keys.length / seconds,
      copiesPerSecond: keys.length / ((copied - listed) / 1000),
      requests,
      errors,
      maxRssKiB: usage.maxRSS,
      cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
    };
  } finally {
    s3.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      'source-bucket': { type: 'string' },
      'target-bucket': { type: 'string' },
      'source-prefix': { type: 'string', default: 'image/' },
      'target-prefix': { type: 'string', default: 'avatar/' },
      concurrency: { type: 'string', default: '128' },
    },
  });
  const result = await measureCeiling({
    sourceBucket: values['source-bucket']!,
    targetBucket: values['target-bucket']!,
    sourcePrefix: values['source-prefix']!,
    targetPrefix: values['target-prefix']!,
    concurrency: Number(values.concurrency),
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
