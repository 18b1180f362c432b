import { CreateBucketCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import { requireDatabaseUrl, type MigrateConfig } from '../config/config.js';
import { checkConnection, createDatabase } from '../db/database.js';
import { createS3Client } from '../s3/client.js';
import { s3ErrorCode } from '../s3/errors.js';
import { explainS3Failure } from '../s3/preflight.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { sendWithRetry, type RequestStats } from '../s3/retry.js';
import { UsageError } from '../errors.js';
import { out } from '../util/output.js';
import { avatarPng } from './png.js';

/** Options of `seed`. */
export interface SeedOptions {
  /** Legacy avatars under the source prefix. */
  count: number;
  /** Modern avatars already under the target prefix. */
  modern: number;
  /** Also seed keys with awkward characters, a 1,024-byte key and a 0-byte object. */
  awkward: boolean;
  /** PutObject requests in flight. */
  concurrency: number;
  quiet: boolean;
}

/** What `seed` added. */
export interface SeedResult {
  rowsAdded: number;
  objectsAdded: number;
}

/**
 * Key names that break naive tools: URL-special characters, spaces,
 * non-ASCII, and a key of exactly 1,024 bytes (the S3 maximum) after the
 * move. Each is relative to the source prefix.
 */
export function awkwardNames(sourcePrefix: string, targetPrefix: string): string[] {
  // The longest key S3 allows is 1,024 bytes. MinIO stores keys as paths, so
  // each segment must also stay within 255 bytes.
  const room = 1024 - Math.max(Buffer.byteLength(sourcePrefix), Buffer.byteLength(targetPrefix)) - 'long/'.length - '.png'.length;
  const segments: string[] = [];
  for (let left = room; left > 0; left -= 201) segments.push('x'.repeat(Math.min(200, left)));
  const long = `long/${segments.join('/')}.png`.replace('/.png', '.png');
  return [
    'with space.png',
    'plus+sign.png',
    'percent%20literal.png',
    'question?mark.png',
    'hash#tag.png',
    'semi;colon.png',
    'colon:and&amp=equals.png',
    'ünïcödé-头像.png',
    'nested/dir/avatar.png',
    `nested/${sourcePrefix}again.png`,
    'empty-0-bytes.png',
    long,
  ];
}

/**
 * Creates the table and buckets if missing, then adds the avatars that are
 * not there yet: re-running with the same options adds nothing.
 */
export async function seed(config: MigrateConfig, options: SeedOptions): Promise<SeedResult> {
  const url = requireDatabaseUrl(config);
  const db = createDatabase({ url, max: 2 });
  const s3 = createS3Client(config.s3, { maxSockets: options.concurrency });
  try {
    await checkConnection(db, url);
    const table = config.table.schema ? sql.id(config.table.schema, config.table.name) : sql.id(config.table.name);
    const id = sql.id(config.idColumn);
    const path = sql.id(config.pathColumn);
    await sql`create table if not exists ${table} (${id} serial primary key, ${path} varchar)`.execute(db);
    for (const bucket of [config.source.bucket, config.target.bucket]) await ensureBucket(s3, bucket);

    const objects: Array<{ bucket: string; key: string; body: Buffer }> = [];
    for (let i = 1; i <= options.count; i++) {
      const key = `${config.source.prefix}avatar-${i}.png`;
      objects.push({ bucket: config.source.bucket, key, body: avatarPng(key) });
    }
    if (options.awkward) {
      for (const name of awkwardNames(config.source.prefix, config.target.prefix)) {
        const key = config.source.prefix + name;
        objects.push({ bucket: config.source.bucket, key, body: name.startsWith('empty-') ? Buffer.alloc(0) : avatarPng(key) });
      }
    }
    for (let i = 1; i <= options.modern; i++) {
      const key = `${config.target.prefix}avatar-m${i}.png`;
      objects.push({ bucket: config.target.bucket, key, body: avatarPng(key) });
    }

    const paths = objects.map((o) => o.key);
    const inserted = await sql<{ n: number }>`
      with wanted as (select p from unnest(${paths}::text[]) with ordinality as w(p, n) order by n),
      added as (
        insert into ${table} (${path})
        select wanted.p from wanted
        where not exists (select 1 from ${table} as t where t.${path} = wanted.p)
        returning 1
      )
      select count(*)::int as n from added
    `.execute(db);

    const existing = new Set<string>();
    for (const location of [config.source, config.target]) {
      for await (const key of listKeys(s3, location.bucket, location.prefix)) existing.add(`${location.bucket}/${key}`);
    }
    const missing = objects.filter((o) => !existing.has(`${o.bucket}/${o.key}`));
    const limiter = new AdaptiveLimiter({ maxInFlight: options.concurrency });
    const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
    let uploaded = 0;
    const started = Date.now();
    await Promise.all(
      missing.map((o) =>
        sendWithRetry(limiter, stats, () =>
          s3.send(new PutObjectCommand({ Bucket: o.bucket, Key: o.key, Body: o.body, ContentType: 'image/png' })),
        ).then(() => {
          uploaded += 1;
          if (!options.quiet && uploaded % 10_000 === 0) {
            out.info(`seed: ${uploaded}/${missing.length} objects uploaded (${Math.round(uploaded / ((Date.now() - started) / 1000))}/s)`);
          }
        }),
      ),
    );
    return { rowsAdded: inserted.rows[0]?.n ?? 0, objectsAdded: uploaded };
  } finally {
    s3.destroy();
    await db.destroy();
  }
}

async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    const code = s3ErrorCode(err);
    if (code === 'BucketAlreadyOwnedByYou' || code === 'BucketAlreadyExists') return;
    throw new UsageError(explainS3Failure(err, bucket, 'bucket'));
  }
}

/** Every key under a prefix, a page at a time. */
export async function* listKeys(s3: S3Client, bucket: string, prefix: string): AsyncGenerator<string> {
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const object of page.Contents ?? []) if (object.Key) yield object.Key;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}
