/**
 * Parallel listing (src/listing/): listing a prefix as key ranges at once
 * returns exactly the keys of one listing chain, awkward keys included
 * (spaces, +, %, unicode above and below U+FFFF, keys that sort right
 * around a boundary), whatever the boundaries: keys that exist, keys that
 * do not, keys outside the prefix. Pages are small, so each range spans
 * several pages and ranges end mid-page. Then end to end: `plan --list` and
 * `validate` on a seeded prefix with awkward keys, over ranges whose
 * boundaries come from the ledger.
 */
import { S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import t from 'tap';
import { ledgerBoundaries, rangesBetween } from '../src/listing/key-ranges.js';
import { listRangePages } from '../src/listing/list-ranges.js';
import { compareKeys } from '../src/validate/compare-keys.js';
import { runCli } from './helpers/cli.js';
import { listKeys, putObject, setupTestEnv } from './helpers/services.js';
import { Kysely, PostgresDialect } from 'kysely';

const AWKWARD = [
  'a', 'a ', 'a!', 'a+b', 'a%20b', 'a%2Fb', 'a-', 'a.png', 'a0', 'a9', 'aa', 'ab', 'a~',
  'with space.png', 'plus+sign.png', 'percent%20literal.png', 'question?mark.png', 'hash#tag.png',
  'ünïcödé-头像.png', 'emoji-😀.png', 'private-\uE000.png', 'private-\uFFFD.png', 'z-\u00ff', 'z-\u0100',
  'nested/dir/avatar.png', 'nested/dir/avatar.png.bak', 'nested/dir0', 'nested/dir~',
  'UPPER.png', 'lower.png', '0-first', '~last',
];

async function allKeys(s3: S3Client, bucket: string, prefix: string, boundaries: string[], pageSize: number): Promise<string[]> {
  const ranges = rangesBetween(boundaries);
  const perRange = await Promise.all(
    ranges.map(async (range) => {
      const keys: string[] = [];
      for await (const page of listRangePages({ s3, bucket, prefix, pageSize }, range)) keys.push(...page.map((o) => o.Key!));
      return keys;
    }),
  );
  return perRange.flat();
}

t.test('key ranges listed at once return exactly the keys of one listing', async (t) => {
  const env = await setupTestEnv(t);
  const prefix = 'image/';
  const names = [...AWKWARD, ...Array.from({ length: 120 }, (_, i) => `avatar-${i}.png`)];
  for (const name of names) await putObject(env.s3client, env.sourceBucket, prefix + name, 'x');
  // Outside the prefix, on both sides of it: never listed.
  await putObject(env.s3client, env.sourceBucket, 'imagd/before.png', 'x');
  await putObject(env.s3client, env.sourceBucket, 'image0/after.png', 'x');

  const single = await listKeys(env.s3client, env.sourceBucket, prefix);
  t.equal(single.length, names.length, 'the single listing holds every key');
  const sorted = [...single].sort(compareKeys);
  t.same(single, sorted, 'a single listing is in UTF-8 byte order');

  const existing = (every: number) => sorted.filter((_, i) => i % every === 0);
  const cases: Record<string, string[]> = {
    'no boundary (one range)': [],
    'every 10th key': existing(10),
    'every key (ranges of one key)': sorted,
    'keys that do not exist, right around existing ones': sorted.flatMap((k, i) => (i % 7 === 0 ? [k + ' ', k + '!', k.slice(0, -1)] : [])),
    'around the awkward keys': ['image/a', 'image/a ', 'image/a%', 'image/a+', 'image/emoji-', 'image/emoji-😀.png', 'image/private-\uE000.png', 'image/z-\u00ff', 'image/nested/dir/', 'image/nested/dir/avatar.png'],
    'outside the prefix': ['imagd/zzz', 'image', 'image0', 'zzz', 'a'],
    'unsorted and repeated': ['image/m', 'image/b', 'image/m', 'image/x', 'image/b'],
  };
  for (const [name, boundaries] of Object.entries(cases)) {
    for (const pageSize of [7, 1000]) {
      const keys = await allKeys(env.s3client, env.sourceBucket, prefix, boundaries, pageSize);
      t.same(keys, single, `${name}, pages of ${pageSize}: the same keys, in the same order, none twice`);
    }
  }
});

t.test('plan --list and validate over ranges from the ledger see every awkward key', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '400', '--awkward', '--quiet'], { env: env.env, timeoutMs: 120_000 })).code, 0, 'seed');
  // Orphans (no row) with awkward names: only a listing finds them.
  for (const name of AWKWARD) await putObject(env.s3client, env.sourceBucket, `image/orphan-${name}`, 'x');
  const plan = await runCli(['plan', '--list', '--json'], { env: env.env, timeoutMs: 120_000 });
  t.equal(plan.code, 0, `plan --list: ${plan.stderr}`);
  const planned = JSON.parse(plan.stdout.trim().split('\n').at(-1)!) as { listing: { listed: number; orphansAdded: number; missing: number } };
  const listed = await listKeys(env.s3client, env.sourceBucket, 'image/');
  t.equal(planned.listing.listed, listed.length, 'plan --list saw every object once');
  t.equal(planned.listing.orphansAdded, AWKWARD.length, 'every awkward orphan added');
  t.equal(planned.listing.missing, 0, 'no planned key reported missing');

  const client = new pg.Client({ connectionString: env.databaseUrl });
  await client.connect();
  t.teardown(() => client.end());
  const ledgerKeys = (await client.query<{ src_key: string }>('select src_key from bucket_migrate.migration_ledger where listed_run_id is not null')).rows.map((r) => r.src_key);
  t.same(ledgerKeys.sort(compareKeys), [...listed].sort(compareKeys), 'the ledger recorded exactly the listed keys');

  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: env.databaseUrl, max: 1 }) }) });
  t.teardown(() => db.destroy());
  const boundaries = await ledgerBoundaries(db, 'bucket_migrate', 'src_key', 8);
  t.equal(boundaries.length, 7, 'seven boundaries for eight ranges');
  t.same(await allKeys(env.s3client, env.sourceBucket, 'image/', boundaries, 50), listed, 'ranges from the ledger list the same keys');

  const run = await runCli(['execute', '--quiet'], { env: env.env, timeoutMs: 180_000 });
  t.equal(run.code, 0, `execute: ${run.stderr}`);
  const validated = await runCli(['validate', '--json'], { env: env.env, timeoutMs: 120_000 });
  t.equal(validated.code, 0, `validate passes: ${validated.stdout.slice(-2000)}`);
  const result = JSON.parse(validated.stdout) as { checks: { targetObjects: { details: { objectsListed: number } }; sourceEmpty: { checked: number } } };
  t.equal(result.checks.targetObjects.details.objectsListed, listed.length, 'validate merged every target object once');
  t.equal(result.checks.sourceEmpty.checked, 0, 'and found the source empty');
});
