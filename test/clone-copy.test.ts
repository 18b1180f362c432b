/**
 * `--copy-mode clone` (the default, issue 14): a single-part source is
 * copied with the COPY directives and no HEAD, and the ledger, not the
 * copy's metadata, records whether the migration made the target
 * (`copy_made`, migration 0010-copy-made). What that must not break:
 * - a crash between a clone and the statement recording it: the resume
 *   finds the clone, accepts it by its MD5, and records that the migration
 *   did not make it (it cannot tell), so revert keeps that target: an
 *   orphan copy, never a row naming a missing object;
 * - a source bucket whose default encryption cannot be read falls back to
 *   HEAD + REPLACE (with provenance) and says so.
 */
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import t, { type Test } from 'tap';
import { readProvenance } from '../src/copy/provenance.js';
import { runCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { listKeys, objectExists, putObject, setupTestEnv, type TestEnv } from './helpers/services.js';
import { startFaultProxy } from './support/fault-proxy.js';

function pattern(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 512) bytes.writeUInt32BE((i * 2654435761 + seed) >>> 0, i);
  return bytes;
}

/** The avatars table with one row per object, and the objects, in the source. */
async function fixture(t: Test, keys: string[]): Promise<TestEnv> {
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', '0', '--quiet'], { env: env.env });
  t.equal(seeded.code, 0, seeded.stderr);
  for (const [i, key] of keys.entries()) {
    await putObject(env.s3client, env.sourceBucket, key, pattern(3000 + i, i), { ContentType: 'image/png', Metadata: { owner: `u${i}` } });
    await query(env.databaseUrl, 'insert into avatars (path) values ($1)', [key]);
  }
  return env;
}

/** Every row names an object that exists: the invariant, checked at rest. */
async function brokenRows(env: TestEnv): Promise<string[]> {
  const rows = await query<{ path: string }>(env.databaseUrl, 'select path from avatars order by id');
  const broken: string[] = [];
  for (const { path } of rows) {
    const bucket = path.startsWith('avatar/') ? env.targetBucket : env.sourceBucket;
    if (!(await objectExists(env.s3client, bucket, path))) broken.push(path);
  }
  return broken;
}

t.test('a clone recorded before a crash is resumed as found, and revert keeps that target (an orphan, never a broken row)', async (t) => {
  const env = await fixture(t, ['image/crashed.png', 'image/clean.png']);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0, 'plan, without --list: the batch lists its sources');
  const staged = await runCli(['execute', '--threads', '1', '--keep-source'], { env: env.env });
  t.equal(staged.code, 0, staged.stderr);
  const clone = await env.s3client.send(new HeadObjectCommand({ Bucket: env.targetBucket, Key: 'avatar/crashed.png' }));
  t.equal(readProvenance(clone.Metadata), undefined, 'a clone carries no provenance');
  t.same(clone.Metadata, { owner: 'u0' }, 'and keeps the source metadata (COPY directive)');
  const recorded = await query<{ src_key: string; copy_made: boolean; src_etag: string | null }>(
    env.databaseUrl,
    'select src_key, copy_made, src_etag from bucket_migrate.migration_ledger order by src_key',
  );
  t.same(recorded.map((r) => [r.src_key, r.copy_made]), [['image/clean.png', true], ['image/crashed.png', true]], 'the copy step recorded that it made both');
  t.ok(recorded.every((r) => /^"?[0-9a-f]{32}"?$/.test(r.src_etag ?? '')), 'and the source ETags the batch listing showed, which the plan did not record');

  // As if the process died after the clone of crashed.png and before the
  // statement recording it: the clone is there, the ledger and rows say pending.
  await query(env.databaseUrl, `update avatars set path = 'image/crashed.png' where path = 'avatar/crashed.png'`);
  await query(env.databaseUrl, `update bucket_migrate.migration_ledger set state = 'pending', dst_etag = null, copy_made = null, src_etag = null where src_key = 'image/crashed.png'`);
  const resumed = await runCli(['execute', '--threads', '1'], { env: env.env });
  t.equal(resumed.code, 0, resumed.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 2 });
  const made = await query<{ src_key: string; copy_made: boolean }>(env.databaseUrl, 'select src_key, copy_made from bucket_migrate.migration_ledger order by src_key');
  t.same(made.map((r) => [r.src_key, r.copy_made]), [['image/clean.png', true], ['image/crashed.png', false]], 'the resume cannot tell who made the clone it found: not ours');
  t.same(await brokenRows(env), [], 'every row names an object');

  const back = await runCli(['revert'], { env: env.env });
  t.equal(back.code, 0, back.stderr);
  t.match(back.stderr, /1 targets were kept: this migration did not make them/);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 2 });
  t.same(await listKeys(env.s3client, env.targetBucket, 'avatar/'), ['avatar/crashed.png'], 'the clone the ledger does not own is kept; the other is deleted');
  t.same((await listKeys(env.s3client, env.sourceBucket, 'image/')).sort(), ['image/clean.png', 'image/crashed.png'], 'both sources are back');
  const note = await query<{ last_error: string | null }>(env.databaseUrl, `select last_error from bucket_migrate.migration_ledger where src_key = 'image/crashed.png'`);
  t.match(note[0]?.last_error, /^target kept: this migration did not make it/);
  t.same(await brokenRows(env), [], 'every row names an object');
});

t.test('a source bucket whose default encryption cannot be read is copied with HEAD + REPLACE, and the run says so', async (t) => {
  const env = await fixture(t, ['image/a.png', 'image/b.png']);
  t.equal((await runCli(['plan', '--list'], { env: env.env })).code, 0);
  let heads = 0;
  const proxy = await startFaultProxy(env.s3.endpoint, {
    match: (req) => {
      if (req.method === 'HEAD') heads += 1;
      return req.method === 'GET' && /[?&]encryption(=|&|$)/.test(req.url);
    },
    errorFor: () => ({ status: 403, code: 'AccessDenied', message: 'Access Denied' }),
  });
  t.teardown(() => proxy.close());
  const run = await runCli(['execute', '--threads', '1'], { env: { ...env.env, S3_ENDPOINT: proxy.endpoint } });
  t.equal(run.code, 0, run.stderr);
  t.match(run.stderr, /note: could not read the default encryption of s3:\/\/\S+ \(.*AccessDenied.*\): copying with HEAD \+ REPLACE \(2 requests per key\); grant s3:GetEncryptionConfiguration/);
  t.ok(heads >= 2, `each source was HEADed (${heads})`);
  const copy = await env.s3client.send(new HeadObjectCommand({ Bucket: env.targetBucket, Key: 'avatar/a.png' }));
  t.equal(readProvenance(copy.Metadata)?.source, `${env.sourceBucket}%2Fimage%2Fa.png`, 'the copy carries provenance');
  t.same(await ledgerStates(env.databaseUrl), { done: 2 });
});

t.test('--copy-mode rejects an unknown mode with one line and exit 2', async (t) => {
  const env = await setupTestEnv(t);
  const bad = await runCli(['execute', '--copy-mode', 'fast'], { env: env.env });
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--copy-mode/);
  t.notMatch(bad.stderr, /\n\s+at /, 'no stack trace');
});
