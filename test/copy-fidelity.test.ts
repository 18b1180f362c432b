import { GetObjectTaggingCommand, HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import t, { type Test } from 'tap';
import {
  copyEncryption,
  copyStorageClass,
  encryptionMatches,
  etagIsMd5,
  isSseCError,
  refusalFor,
  taggingQuery,
  verifyCopy,
} from '../src/copy/object-attributes.js';
import { readProvenance, userMetadata } from '../src/copy/provenance.js';
import { runCli } from './helpers/cli.js';
import { startFaultProxy } from './support/fault-proxy.js';
import { ledgerStates, query } from './helpers/db.js';
import { getBytes, putObject, setupTestEnv, type TestEnv } from './helpers/services.js';

const HEADERS = {
  ContentType: 'image/webp',
  CacheControl: 'public, max-age=31536000, immutable',
  ContentDisposition: 'attachment; filename="me.webp"',
  ContentLanguage: 'fr-CH',
  Metadata: { owner: 'user-42', 'uploaded-by': 'mobile app' },
  Tagging: 'team=growth&pii=no&retention=7%20years',
};

const TAGS = [
  { Key: 'pii', Value: 'no' },
  { Key: 'retention', Value: '7 years' },
  { Key: 'team', Value: 'growth' },
];

/** Every header that makes the object what it is, for comparing source and copy. */
function headers(head: HeadObjectCommandOutput) {
  return {
    ContentLength: head.ContentLength,
    ContentType: head.ContentType,
    CacheControl: head.CacheControl,
    ContentDisposition: head.ContentDisposition,
    ContentEncoding: head.ContentEncoding,
    ContentLanguage: head.ContentLanguage,
    Expires: head.Expires?.toISOString(),
    // The user's own metadata: the copy adds only the provenance keys (checked separately).
    Metadata: userMetadata(head.Metadata),
    StorageClass: head.StorageClass ?? 'STANDARD',
  };
}

async function tags(client: S3Client, bucket: string, key: string) {
  const result = await client.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }));
  return [...(result.TagSet ?? [])].sort((a, b) => (a.Key ?? '').localeCompare(b.Key ?? ''));
}

const head = (client: S3Client, bucket: string, key: string) => client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));

/** A database with the avatars table and one row per key, the given source objects, planned. */
async function fixture(t: Test, objects: Array<{ key: string; body: Buffer; extra?: Parameters<typeof putObject>[4] }>, planArgs = ['plan', '--list']): Promise<TestEnv> {
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', '1', '--quiet'], { env: env.env });
  t.equal(seeded.code, 0, seeded.stderr);
  for (const o of objects) {
    await putObject(env.s3client, env.sourceBucket, o.key, o.body, o.extra);
    await query(env.databaseUrl, 'insert into avatars (path) values ($1)', [o.key]);
  }
  const plan = await runCli(planArgs, { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  return env;
}

function pattern(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4096) bytes.writeUInt32BE((i * 2654435761 + seed) >>> 0, i);
  return bytes;
}

/** Every ledger row's key, state, last error and failure count, by key. */
function ledgerRows(env: TestEnv) {
  return query<{ src_key: string; state: string; last_error: string | null; failures: number }>(
    env.databaseUrl,
    'select src_key, state, last_error, failures from bucket_migrate.migration_ledger order by src_key',
  );
}

t.test('object-attributes: decisions without a server', async (t) => {
  t.same(copyStorageClass('REDUCED_REDUNDANCY', {}), 'REDUCED_REDUNDANCY', 'the source class is kept');
  t.equal(copyStorageClass('STANDARD', {}), undefined, 'STANDARD is the default and not sent');
  t.equal(copyStorageClass(null, {}), undefined);
  t.equal(copyStorageClass('GLACIER_IR', { storageClass: 'STANDARD_IA' }), 'STANDARD_IA', '--storage-class wins');

  t.same(copyEncryption({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'arn:aws:kms:eu-west-1:1:key/abc' }, {}), {
    ServerSideEncryption: 'aws:kms',
    SSEKMSKeyId: 'arn:aws:kms:eu-west-1:1:key/abc',
  }, 'SSE-KMS keeps its key');
  t.same(copyEncryption({ ServerSideEncryption: 'AES256' }, {}), { ServerSideEncryption: 'AES256' }, 'SSE-S3 stays SSE-S3');
  t.same(copyEncryption({ ServerSideEncryption: 'AES256' }, { sseKmsKeyId: 'k1' }), { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'k1' }, '--sse-kms-key-id wins');
  t.same(copyEncryption(undefined, {}), {}, 'unknown: the target bucket default applies');
  t.ok(encryptionMatches({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'abc' }, { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'arn:aws:kms:eu-west-1:1:key/abc' }), 'a key id matches its ARN');
  t.notOk(encryptionMatches({ ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'abc' }, { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'arn:aws:kms:eu-west-1:1:key/other' }));
  t.notOk(encryptionMatches({ ServerSideEncryption: 'aws:kms' }, { ServerSideEncryption: 'AES256' }));
  t.ok(encryptionMatches({}, { ServerSideEncryption: 'AES256' }), 'nothing asked: anything goes');

  t.match(refusalFor({ SSECustomerAlgorithm: 'AES256' }), /SSE-C/);
  t.equal(refusalFor({ ServerSideEncryption: 'aws:kms' }), undefined);
  const badRequest = (message: string) => Object.assign(new Error(message), { name: 'InvalidRequest', $metadata: { httpStatusCode: 400 } });
  t.ok(isSseCError(badRequest('The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.'), false));
  t.notOk(isSseCError(badRequest('Invalid storage class'), false));
  t.ok(isSseCError(badRequest('UnknownError'), true), 'a bare 400 on a HEAD');

  t.ok(etagIsMd5('"5d41402abc4b2a76b9719d911017c592"', undefined));
  t.notOk(etagIsMd5('"5d41402abc4b2a76b9719d911017c592-3"', undefined), 'multipart');
  t.notOk(etagIsMd5('"5d41402abc4b2a76b9719d911017c592"', { ServerSideEncryption: 'aws:kms' }), 'SSE-KMS');

  const md5 = '"5d41402abc4b2a76b9719d911017c592"';
  t.same(verifyCopy({ size: 5, etag: md5 }, { etag: md5 }), { ok: true }, 'equal MD5s: no further request');
  t.match(verifyCopy({ size: 5, etag: md5 }, { etag: '"00000000000000000000000000000000"' }), { ok: false, reason: /ETag/ });
  t.same(verifyCopy({ size: 5, etag: `${md5}-2` }, { etag: md5 }), { ok: 'need-size' }, 'a multipart source: size decides');
  t.same(verifyCopy({ size: 5, etag: `${md5}-2` }, { size: 5, etag: md5 }), { ok: true });
  t.match(verifyCopy({ size: 5, etag: `${md5}-2` }, { size: 4, etag: `${md5}-2` }), { ok: false, reason: /size 4 differs from the source's 5/ });
  t.same(verifyCopy({ size: 5, etag: md5 }, { etag: '"ffffffffffffffffffffffffffffffff"', encryption: { ServerSideEncryption: 'aws:kms' } }), { ok: 'need-size' }, 'a KMS copy: size decides');

  t.equal(taggingQuery([{ Key: 'a b', Value: 'x&y' }, { Key: 'c', Value: '' }]), 'a%20b=x%26y&c=');
  t.equal(taggingQuery([]), undefined);
});

t.test('a listed single-part object is cloned: bytes, headers, metadata and tags, about one request per key', async (t) => {
  const body = pattern(70_000, 1);
  const env = await fixture(t, [{ key: 'image/full.webp', body, extra: HEADERS }]);
  const before = headers(await head(env.s3client, env.sourceBucket, 'image/full.webp'));
  const run = await runCli(['execute', '--threads', '1'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 2 });
  t.same(await getBytes(env.s3client, env.sourceBucket, 'image/full.webp'), undefined, 'the source is gone');
  t.ok((await getBytes(env.s3client, env.targetBucket, 'avatar/full.webp'))?.equals(body), 'byte-identical');
  const after = await head(env.s3client, env.targetBucket, 'avatar/full.webp');
  t.same(headers(after), before, 'header-identical');
  t.equal(after.ContentType, 'image/webp');
  t.same(userMetadata(after.Metadata), HEADERS.Metadata);
  t.equal(readProvenance(after.Metadata), undefined, 'a clone carries no provenance metadata');
  const made = await query<{ copy_made: boolean }>(env.databaseUrl, `select copy_made from bucket_migrate.migration_ledger where src_key = 'image/full.webp'`);
  t.equal(made[0]?.copy_made, true, 'the ledger records that the migration made the copy (revert may delete it)');
  t.same(await tags(env.s3client, env.targetBucket, 'avatar/full.webp'), TAGS, 'all 3 tags');
  // No HEAD at all: 1 listing of the batch's destinations, 2 copies, 1 delete.
  t.match(run.stderr, /execute: 2 keys moved.*; 4 S3 requests \(2\.00 per key\)/s, 'no source HEAD, no destination HEAD');
});

t.test('--copy-mode replace: a listed single-part object keeps bytes, headers, metadata and tags, plus provenance', async (t) => {
  const body = pattern(70_000, 1);
  const env = await fixture(t, [{ key: 'image/full.webp', body, extra: HEADERS }]);
  const before = headers(await head(env.s3client, env.sourceBucket, 'image/full.webp'));
  const run = await runCli(['execute', '--threads', '1', '--copy-mode', 'replace'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 2 });
  t.same(await getBytes(env.s3client, env.sourceBucket, 'image/full.webp'), undefined, 'the source is gone');
  t.ok((await getBytes(env.s3client, env.targetBucket, 'avatar/full.webp'))?.equals(body), 'byte-identical');
  const after = await head(env.s3client, env.targetBucket, 'avatar/full.webp');
  t.same(headers(after), before, 'header-identical');
  t.equal(after.ContentType, 'image/webp');
  t.same(userMetadata(after.Metadata), HEADERS.Metadata);
  t.equal(readProvenance(after.Metadata)?.source, `${env.sourceBucket}%2Fimage%2Ffull.webp`, 'plus the provenance keys, naming the source');
  t.equal(readProvenance(after.Metadata)?.etag, (await head(env.s3client, env.targetBucket, 'avatar/full.webp')).ETag?.replace(/"/g, ''), 'naming the source ETag (single-part: the same MD5)');
  t.same(await tags(env.s3client, env.targetBucket, 'avatar/full.webp'), TAGS, 'all 3 tags');
  // A fresh batch costs no destination HEAD; each copy costs one source
  // HEAD (its headers and metadata are written back with the provenance):
  // 1 listing of the batch's destinations, 2 HEADs, 2 copies, 1 delete.
  t.match(run.stderr, /execute: 2 keys moved.*; 6 S3 requests/s, 'one source HEAD per key, no destination HEAD');
});

t.test('an unlisted object (plan without --list) keeps its class and attributes via the batch\'s source listing', async (t) => {
  const body = pattern(10_000, 2);
  const env = await fixture(t, [{ key: 'image/rrs.png', body, extra: { ...HEADERS, StorageClass: 'REDUCED_REDUNDANCY' } }], ['plan']);
  const before = headers(await head(env.s3client, env.sourceBucket, 'image/rrs.png'));
  t.equal(before.StorageClass, 'REDUCED_REDUNDANCY');
  const run = await runCli(['execute', '--threads', '1'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 2 });
  t.same(headers(await head(env.s3client, env.targetBucket, 'avatar/rrs.png')), before);
  t.same(await tags(env.s3client, env.targetBucket, 'avatar/rrs.png'), TAGS);
  t.ok((await getBytes(env.s3client, env.targetBucket, 'avatar/rrs.png'))?.equals(body));
  // 1 listing of the batch's sources, 1 of its destinations, 2 copies, 1 delete: no HEAD.
  t.match(run.stderr, /execute: 2 keys moved.*; 5 S3 requests/s, 'the source facts came from one listing, not a HEAD per key');
});

t.test('REDUCED_REDUNDANCY is kept, from the listing, single-part and multipart', async (t) => {
  const small = pattern(1000, 3);
  const big = pattern(12 * 1024 * 1024 + 7, 4);
  const env = await fixture(t, [
    { key: 'image/small-rrs.png', body: small, extra: { StorageClass: 'REDUCED_REDUNDANCY', ContentType: 'image/png' } },
    { key: 'image/big-rrs.png', body: big, extra: { StorageClass: 'REDUCED_REDUNDANCY', ContentType: 'image/png' } },
  ]);
  const classes = await query<{ src_key: string; src_storage_class: string }>(env.databaseUrl, 'select src_key, src_storage_class from bucket_migrate.migration_ledger order by src_key');
  t.same(classes.filter((c) => c.src_key.includes('rrs')).map((c) => c.src_storage_class), ['REDUCED_REDUNDANCY', 'REDUCED_REDUNDANCY'], 'plan --list recorded the class');
  const run = await runCli(['execute', '--threads', '1', '--multipart-threshold', '5MiB', '--part-size', '5MiB'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  for (const key of ['small-rrs.png', 'big-rrs.png']) {
    const after = await head(env.s3client, env.targetBucket, `avatar/${key}`);
    t.equal(after.StorageClass, 'REDUCED_REDUNDANCY', `${key} keeps its class`);
  }
  t.match((await head(env.s3client, env.targetBucket, 'avatar/big-rrs.png')).ETag, /-3"$/, 'the big one was copied in parts');
});

t.test('--storage-class overrides the source class', async (t) => {
  const env = await fixture(t, [{ key: 'image/std.png', body: pattern(500, 5), extra: { ContentType: 'image/png' } }], ['plan']);
  const run = await runCli(['execute', '--threads', '1', '--storage-class', 'reduced_redundancy'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.equal((await head(env.s3client, env.targetBucket, 'avatar/std.png')).StorageClass, 'REDUCED_REDUNDANCY');
  const bad = await runCli(['execute', '--storage-class', 'FAST'], { env: env.env });
  t.equal(bad.code, 2, 'an unknown class is a usage error');
  t.match(bad.stderr, /--storage-class must be one of/);
});

t.test('a multipart copy keeps headers, metadata and tags', async (t) => {
  const big = pattern(12 * 1024 * 1024, 6);
  const env = await fixture(t, [{ key: 'image/big.webp', body: big, extra: HEADERS }]);
  const before = headers(await head(env.s3client, env.sourceBucket, 'image/big.webp'));
  const run = await runCli(['execute', '--threads', '1', '--multipart-threshold', '5MiB', '--part-size', '5MiB'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 2 });
  const after = await head(env.s3client, env.targetBucket, 'avatar/big.webp');
  t.match(after.ETag, /-3"$/, 'copied in 3 parts');
  t.same(headers(after), before, 'header-identical');
  t.same(await tags(env.s3client, env.targetBucket, 'avatar/big.webp'), TAGS, 'all 3 tags');
  t.ok((await getBytes(env.s3client, env.targetBucket, 'avatar/big.webp'))?.equals(big), 'byte-identical');
});

t.test('a copy whose size does not match the source fails at once and keeps the source', async (t) => {
  const big = pattern(12 * 1024 * 1024, 7);
  const env = await fixture(t, [{ key: 'image/big.png', body: big, extra: { ContentType: 'image/png' } }]);
  // The ledger now disagrees with the object about its size, as if the
  // listing and the copy had seen different objects.
  await query(env.databaseUrl, `update bucket_migrate.migration_ledger set src_size = src_size - 1 where src_key = 'image/big.png'`);
  const run = await runCli(['execute', '--threads', '1', '--multipart-threshold', '5MiB', '--part-size', '5MiB'], { env: env.env });
  t.equal(run.code, 1, 'a failed key makes the exit code 1');
  const rows = await query<{ state: string; last_error: string; failures: number; failed_state: string }>(
    env.databaseUrl,
    `select state, last_error, failures, failed_state from bucket_migrate.migration_ledger where src_key = 'image/big.png'`,
  );
  t.equal(rows[0]?.state, 'failed');
  t.equal(rows[0]?.failures, 1, 'terminal at the first failure, not retried');
  t.equal(rows[0]?.failed_state, 'pending');
  t.match(rows[0]?.last_error, /copy verification failed: destination size 12582912 differs from the source's 12582911/);
  t.ok((await getBytes(env.s3client, env.sourceBucket, 'image/big.png'))?.equals(big), 'the source is kept');
  const paths = await query<{ path: string }>(env.databaseUrl, `select path from avatars where path like '%big.png'`);
  t.same(paths, [{ path: 'image/big.png' }], 'the row still names the source');
});

t.test('a source changed between plan --list and execute is not copied and is kept', async (t) => {
  const env = await fixture(t, [{ key: 'image/changed.png', body: pattern(4000, 8), extra: { ContentType: 'image/png' } }]);
  const replaced = pattern(5000, 9);
  await putObject(env.s3client, env.sourceBucket, 'image/changed.png', replaced, { ContentType: 'image/png' });
  const run = await runCli(['execute', '--threads', '1', '--max-attempts', '1'], { env: env.env });
  t.equal(run.code, 1);
  const rows = await query<{ state: string; last_error: string }>(env.databaseUrl, `select state, last_error from bucket_migrate.migration_ledger where src_key = 'image/changed.png'`);
  t.equal(rows[0]?.state, 'failed');
  t.match(rows[0]?.last_error, /source changed since plan/);
  t.ok((await getBytes(env.s3client, env.sourceBucket, 'image/changed.png'))?.equals(replaced), 'the source is kept');
  t.same(await getBytes(env.s3client, env.targetBucket, 'avatar/changed.png'), undefined, 'nothing was copied');
});

t.test('an archived source (403 InvalidObjectState) is archived, not fatal, and kept', async (t) => {
  const env = await fixture(t, [
    { key: 'image/frozen.png', body: pattern(3000, 10), extra: { ContentType: 'image/png' } },
    { key: 'image/warm.png', body: pattern(3000, 11), extra: { ContentType: 'image/png' } },
  ]);
  // S3 refuses to copy an object in GLACIER or DEEP_ARCHIVE until it is restored.
  const proxy = await startFaultProxy(env.s3.endpoint, {
    errorFor: (req) =>
      req.method === 'PUT' && req.url.includes('frozen')
        ? { status: 403, code: 'InvalidObjectState', message: "The operation is not valid for the object's storage class" }
        : undefined,
  });
  t.teardown(() => proxy.close());
  const run = await runCli(['execute', '--threads', '1'], { env: { ...env.env, S3_ENDPOINT: proxy.endpoint } });
  t.equal(run.code, 1, 'an archived key makes the exit code 1');
  t.ok((proxy.stats.injected.errorFor ?? 0) >= 1, 'the copy was refused');
  const rows = await ledgerRows(env);
  const frozen = rows.find((r) => r.src_key === 'image/frozen.png');
  t.equal(frozen?.state, 'archived');
  t.equal(frozen?.failures, 0, 'not retried');
  t.match(frozen?.last_error, /archive storage class \(STANDARD\): restore it.*InvalidObjectState/);
  t.equal(rows.find((r) => r.src_key === 'image/warm.png')?.state, 'done', 'the run went on');
  t.ok(await getBytes(env.s3client, env.sourceBucket, 'image/frozen.png'), 'the archived source is kept');
  const paths = await query<{ path: string }>(env.databaseUrl, `select path from avatars where path like '%frozen.png'`);
  t.same(paths, [{ path: 'image/frozen.png' }], 'its row still names the source');

  // Restored (the proxy is out of the way): --retry-failed re-queues it.
  const retry = await runCli(['execute', '--threads', '1', '--retry-failed'], { env: env.env });
  t.equal(retry.code, 0, retry.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 3 });
  t.same(await getBytes(env.s3client, env.sourceBucket, 'image/frozen.png'), undefined, 'moved once restored');
});

for (const [listed, mode] of [[true, 'clone'], [false, 'clone'], [false, 'replace']] as const) {
  t.test(`an SSE-C source is refused at once with a clear reason (${mode === 'clone' ? 'refused copy' : 'refused HEAD'}, plan ${listed ? 'with' : 'without'} --list)`, async (t) => {
    // MinIO only takes SSE-C over TLS, so S3's answers are played by the proxy:
    // a copy of an SSE-C object without its key is a 400 InvalidRequest naming
    // server-side encryption, and a HEAD of one a bare 400.
    const env = await fixture(
      t,
      [
        { key: 'image/secret.png', body: pattern(2000, 12), extra: { ContentType: 'image/png' } },
        { key: 'image/plain.png', body: pattern(2000, 13), extra: { ContentType: 'image/png' } },
      ],
      listed ? ['plan', '--list'] : ['plan'],
    );
    const proxy = await startFaultProxy(env.s3.endpoint, {
      errorFor: (req) => {
        if (!req.url.includes('secret')) return undefined;
        // Both answers, as S3 gives them: a clone (the default) sends the copy
        // with no HEAD, a copy in replace mode HEADs the source first.
        if (req.method === 'PUT') {
          return { status: 400, code: 'InvalidRequest', message: 'The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.' };
        }
        if (req.method === 'HEAD' && req.url.includes(env.sourceBucket)) return { status: 400, code: 'BadRequest' };
        return undefined;
      },
    });
    t.teardown(() => proxy.close());
    const run = await runCli(['execute', '--threads', '1', '--copy-mode', mode], { env: { ...env.env, S3_ENDPOINT: proxy.endpoint } });
    t.equal(run.code, 1, run.stderr);
    t.ok((proxy.stats.injected.errorFor ?? 0) >= 1);
    const rows = await ledgerRows(env);
    const secret = rows.find((r) => r.src_key === 'image/secret.png');
    t.equal(secret?.state, 'failed');
    t.equal(secret?.failures, 1, 'failed at once, not retried');
    t.match(secret?.last_error, /SSE-C.*not copied/);
    t.equal(rows.find((r) => r.src_key === 'image/plain.png')?.state, 'done', 'the run went on');
    t.ok(await getBytes(env.s3client, env.sourceBucket, 'image/secret.png'), 'the source is kept');
    t.same(await getBytes(env.s3client, env.targetBucket, 'avatar/secret.png'), undefined, 'nothing was copied');
  });
}
