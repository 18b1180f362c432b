/**
 * `plan --inventory`: an S3 Inventory report, written by the test into
 * MinIO in the documented format (manifest.json naming gzip CSV data files
 * with their MD5s; no header; every field quoted; keys URL-encoded), serves
 * as the listing: sizes, ETags and storage classes recorded per key,
 * orphans added, keys the inventory lacks marked missing, exactly as
 * `plan --list` would. A data file whose MD5 does not match the manifest
 * stops the plan before anything from it is recorded; an inventory of
 * another bucket is refused with exit 2.
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { ListObjectsV2Command, type _Object } from '@aws-sdk/client-s3';
import pg from 'pg';
import t from 'tap';
import { decodeKey, parseCsvLine } from '../src/plan/inventory.js';
import { runCli } from './helpers/cli.js';
import { putObject, setupTestEnv } from './helpers/services.js';

const SCHEMA = 'Bucket, Key, Size, ETag, StorageClass';

t.test('CSV fields and URL-encoded keys decode as the documentation describes', async (t) => {
  t.same(parseCsvLine('"b","image%2Fa+b%2Bc.png","12","abc","STANDARD"'), ['b', 'image%2Fa+b%2Bc.png', '12', 'abc', 'STANDARD']);
  t.same(parseCsvLine('"a ""quoted"" value",,"x"'), ['a "quoted" value', '', 'x']);
  t.equal(decodeKey('image/with+space%2Bplus%25.png'), 'image/with space+plus%.png');
  t.equal(decodeKey('image/%C3%BCn%C3%AFc%C3%B6d%C3%A9-%E5%A4%B4%E5%83%8F.png'), 'image/ünïcödé-头像.png');
  t.equal(decodeKey('image/with%20space.png'), 'image/with space.png');
});

t.test('plan --inventory reads an S3 Inventory report as the listing', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '60', '--awkward', '--quiet'], { env: env.env, timeoutMs: 120_000 })).code, 0, 'seed');
  await putObject(env.s3client, env.sourceBucket, 'image/orphan with space+plus.png', 'an orphan');
  await putObject(env.s3client, env.sourceBucket, 'other/outside.png', 'outside the prefix');

  // Every object of the source bucket, as the inventory would hold it, less one planned key (deleted since).
  const objects: _Object[] = [];
  let token: string | undefined;
  do {
    const page = await env.s3client.send(new ListObjectsV2Command({ Bucket: env.sourceBucket, ContinuationToken: token }));
    objects.push(...(page.Contents ?? []));
    token = page.NextContinuationToken;
  } while (token);
  const dropped = 'image/avatar-7.png';
  const inventoried = objects.filter((o) => o.Key !== dropped);
  // Keys URL-encoded: one file with spaces as '+', the other with '%20'.
  const encode = (key: string, plusForSpace: boolean) => {
    const encoded = encodeURIComponent(key).replace(/%2F/g, '/');
    return plusForSpace ? encoded.replace(/%20/g, '+') : encoded;
  };
  const csv = (rows: _Object[], plusForSpace: boolean) =>
    rows
      .map((o) => [env.sourceBucket, encode(o.Key!, plusForSpace), String(o.Size), o.ETag!.replace(/"/g, ''), o.StorageClass ?? 'STANDARD'].map((f) => `"${f}"`).join(','))
      .join('\n') + '\n';
  const half = Math.ceil(inventoried.length / 2);
  const files = [gzipSync(csv(inventoried.slice(0, half), true)), gzipSync(csv(inventoried.slice(half), false))];
  const base = `inventory/${env.sourceBucket}/daily/2026-12-01T00-00Z`;
  const fileKeys = files.map((_, i) => `inventory/${env.sourceBucket}/daily/data/part-${i}.csv.gz`);
  for (const [i, body] of files.entries()) await putObject(env.s3client, env.targetBucket, fileKeys[i]!, body);
  const manifest = (md5s: string[], bucket = env.sourceBucket) =>
    JSON.stringify({
      sourceBucket: bucket,
      destinationBucket: `arn:aws:s3:::${env.targetBucket}`,
      version: '2016-11-30',
      creationTimestamp: String(Date.now()),
      fileFormat: 'CSV',
      fileSchema: SCHEMA,
      files: files.map((body, i) => ({ key: fileKeys[i], size: body.length, MD5checksum: md5s[i] })),
    });
  const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
  await putObject(env.s3client, env.targetBucket, `${base}/manifest.json`, manifest(files.map(md5)));
  await putObject(env.s3client, env.targetBucket, `${base}/bad-md5/manifest.json`, manifest([md5(files[0]!), '0'.repeat(32)]));
  await putObject(env.s3client, env.targetBucket, `${base}/other-bucket/manifest.json`, manifest(files.map(md5), 'someone-elses-bucket'));

  const client = new pg.Client({ connectionString: env.databaseUrl });
  await client.connect();
  t.teardown(() => client.end());
  const listedRows = async () =>
    (await client.query<{ n: number }>('select count(*)::int as n from bucket_migrate.migration_ledger where listed_run_id is not null')).rows[0]!.n;

  const otherBucket = await runCli(['plan', '--inventory', `s3://${env.targetBucket}/${base}/other-bucket/manifest.json`], { env: env.env, timeoutMs: 120_000 });
  t.equal(otherBucket.code, 2, 'an inventory of another bucket: exit 2');
  t.match(otherBucket.stderr, /lists bucket someone-elses-bucket, not SOURCE_BUCKET/);
  t.notMatch(otherBucket.stderr, /\n\s+at /, 'no stack trace');
  const ledgerMade = await client.query<{ made: boolean }>(`select to_regclass('bucket_migrate.migration_ledger') is not null as made`);
  t.equal(ledgerMade.rows[0]!.made, false, 'refused before the ledger was created: nothing half-applied');

  const badMd5 = await runCli(['plan', '--inventory', `s3://${env.targetBucket}/${base}/bad-md5/manifest.json`], { env: env.env, timeoutMs: 120_000 });
  t.equal(badMd5.code, 1, 'a data file that fails its MD5: the plan stops');
  t.match(badMd5.stderr, /has MD5 [0-9a-f]{32}, the manifest says 0{32}/);
  // A plan that fails on a fresh ledger removes what it created (nothing half-applied), so no key
  // can have been marked missing from a partial inventory.
  const ledgerAfterBad = await client.query<{ made: boolean }>(`select to_regclass('bucket_migrate.migration_ledger') is not null as made`);
  t.equal(ledgerAfterBad.rows[0]!.made, false, 'no ledger, so no key marked missing from a partial inventory');

  const bad = await runCli(['plan', '--inventory', 's3:/nope'], { env: env.env });
  t.equal(bad.code, 2, 'a malformed manifest address: exit 2');

  const run = await runCli(['plan', '--inventory', `s3://${env.targetBucket}/${base}/manifest.json`, '--json'], { env: env.env, timeoutMs: 120_000 });
  t.equal(run.code, 0, `plan --inventory: ${run.stderr}`);
  const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { listing: { listed: number; orphansAdded: number; missing: number } };
  const underPrefix = inventoried.filter((o) => o.Key!.startsWith('image/') && !o.Key!.endsWith('/'));
  t.equal(result.listing.listed, underPrefix.length, 'every inventoried key under the prefix, once');
  t.equal(result.listing.orphansAdded, 1, 'the orphan (awkward name) added');
  t.equal(result.listing.missing, 1, 'the key missing from the inventory marked missing');
  t.ok((await listedRows()) >= underPrefix.length);

  const ledger = await client.query<{ src_key: string; src_size: string; src_etag: string; src_storage_class: string; state: string }>(
    'select src_key, src_size::text, src_etag, src_storage_class, state from bucket_migrate.migration_ledger',
  );
  const byKey = new Map(ledger.rows.map((r) => [r.src_key, r]));
  t.equal(byKey.get(dropped)?.state, 'missing');
  t.equal(byKey.get('image/orphan with space+plus.png')?.state, 'pending');
  t.notOk(byKey.has('other/outside.png'), 'nothing outside the prefix');
  const wrong = underPrefix.filter((o) => {
    const row = byKey.get(o.Key!);
    return !row || row.src_size !== String(o.Size) || row.src_etag !== o.ETag || row.src_storage_class !== (o.StorageClass ?? 'STANDARD');
  });
  t.same(wrong.map((o) => o.Key), [], 'size, ETag (quoted, as a listing gives it) and storage class recorded for every key, awkward ones included');

  // The ledger planned from an inventory moves like any other.
  const moved = await runCli(['execute', '--quiet'], { env: env.env, timeoutMs: 180_000 });
  t.ok(moved.code === 0 || moved.code === 1, `execute ran to the end (${moved.code})\n${moved.stderr}`);
  const states = await client.query<{ state: string; n: number }>('select state, count(*)::int as n from bucket_migrate.migration_ledger group by state');
  t.same(Object.fromEntries(states.rows.map((r) => [r.state, r.n])), { done: underPrefix.length, missing: 1 }, 'every inventoried key done, the dropped one missing');
});
