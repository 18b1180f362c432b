import { randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  S3Client,
  type ObjectIdentifier,
  type PutObjectCommandInput,
  type PutObjectCommandOutput,
} from '@aws-sdk/client-s3';
import tap from 'tap';
import { startS3, type LocalS3 } from '../../scripts/lib/local-minio.js';
import { localS3Client } from '../../scripts/lib/local-s3-client.js';
import {
  createDatabase,
  dropDatabase,
  startPostgres,
  withDatabase,
  type LocalPostgres,
} from '../../scripts/lib/local-postgres.js';

// The SDK's Node 20 deprecation notice would otherwise land in every test's stderr.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** The part of a tap `Test` these helpers use (any tap test, root or sub, fits). */
export interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** One test's private database and buckets, on the file's shared servers. */
export interface TestEnv {
  /** URL of this test's own database. */
  databaseUrl: string;
  dbName: string;
  s3: LocalS3;
  sourceBucket: string;
  targetBucket: string;
  /**
   * Environment for running the CLI against this test's database and buckets:
   * `process.env` without DATABASE_URL, S3_ENDPOINT, AWS_*, SOURCE_*, TARGET_*,
   * plus those pointing here.
   */
  env: NodeJS.ProcessEnv;
  /** Client with the server's credentials; shared by the file, do not destroy it. */
  s3client: S3Client;
  /** Drops the database and deletes the buckets; also registered with `t.teardown`. Idempotent. */
  teardown(): Promise<void>;
}

/** Options for {@link setupTestEnv}. */
export interface SetupTestEnvOptions {
  /** Create the two buckets (default true). When false the names are still reserved and cleaned up. */
  buckets?: boolean;
}

/** The servers shared by every test in one test file (one process). */
export interface SharedServices {
  postgres: LocalPostgres;
  s3: LocalS3;
  s3client: S3Client;
}

let shared: Promise<SharedServices> | undefined;

/**
 * Starts (once per process) Postgres and S3 via `startPostgres` / `startS3`,
 * and stops them when the root tap test ends. Set `BM_SERVICES_VERBOSE=1` to
 * see which servers were picked and how long they took.
 */
export function getServices(): Promise<SharedServices> {
  if (!shared) {
    shared = startServices();
    // Root-level teardown also makes tap end the root test once idle, instead
    // of waiting for an event loop that our server processes keep busy.
    tap.teardown(stopServices);
  }
  return shared;
}

/** Stops the shared servers now; the next `getServices()` starts fresh ones. */
export async function stopServices(): Promise<void> {
  const current = shared;
  shared = undefined;
  if (!current) return;
  const services = await current.catch(() => undefined);
  if (!services) return;
  services.s3client.destroy();
  await Promise.allSettled([services.s3.stop(), services.postgres.stop()]);
}

async function startServices(): Promise<SharedServices> {
  const log = process.env.BM_SERVICES_VERBOSE ? (line: string) => process.stderr.write(`# ${line}\n`) : undefined;
  const [postgres, s3] = await Promise.allSettled([startPostgres({ log }), startS3({ log })]);
  if (postgres.status === 'rejected' || s3.status === 'rejected') {
    // Never leave the one that did start running.
    if (postgres.status === 'fulfilled') await postgres.value.stop();
    if (s3.status === 'fulfilled') await s3.value.stop();
    throw postgres.status === 'rejected' ? postgres.reason : (s3 as PromiseRejectedResult).reason;
  }
  return { postgres: postgres.value, s3: s3.value, s3client: createTestS3Client(s3.value) };
}

/**
 * Creates a fresh database and two fresh buckets on the file's shared servers,
 * removed again by `t.teardown`.
 */
export async function setupTestEnv(t: Teardownable, opts: SetupTestEnvOptions = {}): Promise<TestEnv> {
  const { postgres, s3, s3client } = await getServices();
  const dbName = `bm_${randomSuffix()}`;
  const suffix = randomSuffix();
  const sourceBucket = `src-${suffix}`;
  const targetBucket = `dst-${suffix}`;

  let tornDown: Promise<void> | undefined;
  const teardown = (): Promise<void> => {
    tornDown ??= (async () => {
      // A test that failed while MinIO was paused would hang the cleanup.
      s3.resume?.();
      await Promise.all([
        dropDatabase(postgres.url, dbName),
        deleteBucketCompletely(s3client, sourceBucket),
        deleteBucketCompletely(s3client, targetBucket),
      ]);
    })();
    return tornDown;
  };
  // Registered before creating anything, so a half-done setup is cleaned up too.
  t.teardown(teardown);

  await createDatabase(postgres.url, dbName);
  if (opts.buckets !== false) {
    await s3client.send(new CreateBucketCommand({ Bucket: sourceBucket }));
    await s3client.send(new CreateBucketCommand({ Bucket: targetBucket }));
  }
  const databaseUrl = withDatabase(postgres.url, dbName);
  const env = {
    ...environmentWithoutServiceSettings(process.env),
    DATABASE_URL: databaseUrl,
    S3_ENDPOINT: s3.endpoint,
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_REGION: 'us-east-1',
    SOURCE_BUCKET: sourceBucket,
    TARGET_BUCKET: targetBucket,
  };
  return { databaseUrl, dbName, s3, sourceBucket, targetBucket, env, s3client, teardown };
}

/**
 * A client for `s3` with its credentials passed explicitly, so it never
 * depends on the test process's own AWS_* environment.
 */
export const createTestS3Client = localS3Client;

const SERVICE_SETTING = /^(DATABASE_URL$|S3_ENDPOINT$|AWS_|SOURCE_|TARGET_)/;

function environmentWithoutServiceSettings(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !SERVICE_SETTING.test(name)));
}

function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

// ---------------------------------------------------------------------------
// S3 helpers

/** Every key in `bucket` under `prefix`, in S3's (lexicographic) order. */
export async function listKeys(client: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const object of page.Contents ?? []) if (object.Key !== undefined) keys.push(object.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** The object's bytes, or undefined if there is no such key. */
export async function getBytes(client: S3Client, bucket: string, key: string): Promise<Buffer | undefined> {
  try {
    const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    if (!response.Body) return Buffer.alloc(0);
    return Buffer.from(await response.Body.transformToByteArray());
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/** Puts one object; `extra` adds any PutObject parameter (ContentType, Metadata, ...). */
export function putObject(
  client: S3Client,
  bucket: string,
  key: string,
  body: string | Uint8Array,
  extra: Partial<PutObjectCommandInput> = {},
): Promise<PutObjectCommandOutput> {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  // An explicit length stops the SDK from treating small or empty bodies as
  // streams of unknown length (and warning about it on every call).
  return client.send(
    new PutObjectCommand({ ContentLength: bytes.byteLength, ...extra, Bucket: bucket, Key: key, Body: bytes }),
  );
}

/** Whether `key` exists (HEAD). */
export async function objectExists(client: S3Client, bucket: string, key: string): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (error) {
    if (isNotFound(error)) return false;
    throw error;
  }
}

function isNotFound(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

/**
 * Deletes a bucket with everything in it: object versions and delete markers
 * (a test may have turned versioning on) and unfinished multipart uploads,
 * each of which would make DeleteBucket fail. A missing bucket is fine.
 */
async function deleteBucketCompletely(client: S3Client, bucket: string): Promise<void> {
  try {
    await deleteAllVersions(client, bucket);
    await abortAllUploads(client, bucket);
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  } catch (error) {
    if ((error as { name?: string }).name === 'NoSuchBucket') return;
    throw error;
  }
}

// deleteAllVersions and abortAllUploads page the same way, on purpose: the
// SDK has no paginator for either listing, and a generic one over two
// different marker pairs would be longer than the two loops.
async function deleteAllVersions(client: S3Client, bucket: string): Promise<void> {
  let keyMarker: string | undefined;
  let versionMarker: string | undefined;
  do {
    const page = await client.send(
      new ListObjectVersionsCommand({ Bucket: bucket, KeyMarker: keyMarker, VersionIdMarker: versionMarker }),
    );
    const ids: ObjectIdentifier[] = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].flatMap((v) =>
      v.Key === undefined ? [] : [{ Key: v.Key, VersionId: v.VersionId }],
    );
    if (ids.length > 0) {
      await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: ids, Quiet: true } }));
    }
    keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
    versionMarker = page.IsTruncated ? page.NextVersionIdMarker : undefined;
  } while (keyMarker !== undefined);
}

async function abortAllUploads(client: S3Client, bucket: string): Promise<void> {
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  do {
    const page = await client.send(
      new ListMultipartUploadsCommand({ Bucket: bucket, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
    );
    for (const upload of page.Uploads ?? []) {
      await client.send(
        new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }),
      );
    }
    keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
    uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
  } while (keyMarker !== undefined);
}
