/**
 * Proves the test harness talks to real servers: a real database per test, a
 * real MinIO that stores bytes, and pause/resume/restart that behave as the
 * failure-injection tests expect.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { freePort } from '../scripts/lib/free-port.js';
import { testS3Server } from '../scripts/lib/local-minio.js';
import { withDatabase } from '../scripts/lib/local-postgres.js';
import { createTestS3Client, getBytes, listKeys, objectExists, putObject, setupTestEnv } from './helpers/services.js';
import { query } from './helpers/db.js';

async function queryOne<T>(url: string, sql: string): Promise<T> {
  return (await query(url, sql))[0] as T;
}

t.test('freePort returns distinct usable ports', async (t) => {
  const [a, b] = await Promise.all([freePort(), freePort()]);
  t.ok(a > 0 && a < 65536);
  t.not(a, b);
});

t.test('withDatabase swaps only the database', async (t) => {
  t.equal(
    withDatabase('postgres://u:p%40ss@127.0.0.1:5433/postgres?sslmode=disable', 'bm_x'),
    'postgres://u:p%40ss@127.0.0.1:5433/bm_x?sslmode=disable',
  );
});

t.test('each test gets its own real database', async (t) => {
  const env = await setupTestEnv(t, { buckets: false });
  t.match(env.dbName, /^bm_[0-9a-f]{12}$/);
  const row = await queryOne<{ one: number; db: string; encoding: string }>(
    env.databaseUrl,
    "select 1 as one, current_database() as db, pg_encoding_to_char(encoding) as encoding from pg_database where datname = current_database()",
  );
  t.same(row, { one: 1, db: env.dbName, encoding: 'UTF8' });
  t.equal(env.env.DATABASE_URL, env.databaseUrl);
  t.equal(env.env.SOURCE_BUCKET, env.sourceBucket);
  t.equal(env.env.AWS_REGION, 'us-east-1');

  await env.teardown();
  const admin = withDatabase(env.databaseUrl, 'postgres');
  const gone = await queryOne<{ n: string }>(admin, `select count(*) as n from pg_database where datname = '${env.dbName}'`);
  t.equal(gone.n, '0', 'teardown dropped the database');
});

t.test('objects round-trip byte for byte through the S3 server', async (t) => {
  const env = await setupTestEnv(t);
  t.match(env.sourceBucket, /^src-[0-9a-f]{12}$/);
  t.match(env.targetBucket, /^dst-[0-9a-f]{12}$/);
  const body = randomBytes(256 * 1024);
  const key = 'dir/ünïcode key+with spaces.bin';
  await putObject(env.s3client, env.sourceBucket, key, body, { ContentType: 'application/octet-stream' });
  await putObject(env.s3client, env.sourceBucket, 'other/x', 'x');

  t.same(await getBytes(env.s3client, env.sourceBucket, key), body);
  t.equal(await getBytes(env.s3client, env.sourceBucket, 'missing'), undefined);
  t.equal(await objectExists(env.s3client, env.sourceBucket, key), true);
  t.equal(await objectExists(env.s3client, env.sourceBucket, 'missing'), false);
  t.same(await listKeys(env.s3client, env.sourceBucket, 'dir/'), [key]);
  t.same(await listKeys(env.s3client, env.targetBucket, ''), []);
});

t.test('listKeys follows pagination', async (t) => {
  const env = await setupTestEnv(t);
  const keys = Array.from({ length: 1_005 }, (_, i) => `k/${String(i).padStart(5, '0')}`);
  for (let i = 0; i < keys.length; i += 100) {
    await Promise.all(keys.slice(i, i + 100).map((key) => putObject(env.s3client, env.sourceBucket, key, '')));
  }
  t.same(await listKeys(env.s3client, env.sourceBucket, 'k/'), keys);
});

t.test('TEST_S3_SERVER picks the server the tests start', async (t) => {
  t.equal(testS3Server({}), 'minio', 'MinIO by default');
  t.equal(testS3Server({ TEST_S3_SERVER: '' }), 'minio');
  t.equal(testS3Server({ TEST_S3_SERVER: 'versitygw' }), 'versitygw');
  t.equal(testS3Server({ TEST_S3_SERVER: 'MinIO' }), 'minio', 'any case');
  t.throws(() => testS3Server({ TEST_S3_SERVER: 'ceph' }), { message: 'TEST_S3_SERVER=ceph is not a server the tests can start; use minio or versitygw' });
  const env = await setupTestEnv(t, { buckets: false });
  t.equal(env.s3.kind, process.env.S3_ENDPOINT ? 'configured' : testS3Server(), 'the file runs on the server asked for');
});

t.test('S3 server pause/resume and restart', async (t) => {
  const env = await setupTestEnv(t);
  const { s3 } = env;
  if (s3.kind === 'configured' || !s3.pause || !s3.resume || !s3.restart) {
    t.plan(0, 'S3_ENDPOINT points at an external server; nothing to pause or restart');
    return;
  }
  await putObject(env.s3client, env.sourceBucket, 'before', 'kept');

  await t.test('a paused server does not answer, a resumed one does', async (t) => {
    const impatient = createTestS3Client(s3, { maxAttempts: 1 });
    t.teardown(() => impatient.destroy());
    const get = new GetObjectCommand({ Bucket: env.sourceBucket, Key: 'before' });
    s3.pause!();
    try {
      await t.rejects(impatient.send(get, { abortSignal: AbortSignal.timeout(500) }), { name: 'AbortError' });
    } finally {
      s3.resume!();
    }
    t.equal((await getBytes(impatient, env.sourceBucket, 'before'))?.toString(), 'kept');
  });

  await t.test('restart keeps data, port and credentials', async (t) => {
    const pidBefore = s3.process?.pid;
    await s3.restart!();
    t.not(s3.process?.pid, pidBefore, 'a new process');
    t.ok(s3.dataDir && existsSync(s3.dataDir), 'same data dir');
    t.equal((await getBytes(env.s3client, env.sourceBucket, 'before'))?.toString(), 'kept');
    await putObject(env.s3client, env.sourceBucket, 'after', 'new');
    t.same(await listKeys(env.s3client, env.sourceBucket), ['after', 'before']);
  });
});
