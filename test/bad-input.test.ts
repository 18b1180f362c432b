/**
 * Bad input: each case gets one clear line, the documented exit code, and
 * leaves the table and both buckets exactly as they were.
 */
import { DeleteBucketCommand } from '@aws-sdk/client-s3';
import t, { type Test } from 'tap';
import { runCli, type CliResult } from './helpers/cli.js';
import { putObject, setupTestEnv, type TestEnv } from './helpers/services.js';
import { assertMigrated, captureBaseline, ledgerStates, listObjects, query } from './support/end-state.js';

/** Rows plus both buckets' objects: what "nothing changed" compares. */
async function fingerprint(env: TestEnv): Promise<string> {
  const rows = await query(env.databaseUrl, 'select id, path from avatars order by id').catch(() => 'no table');
  const source = [...(await listObjects(env.s3client, env.sourceBucket, '').catch(() => new Map()))];
  const target = [...(await listObjects(env.s3client, env.targetBucket, '').catch(() => new Map()))];
  return JSON.stringify({ rows, source, target });
}

/** Exactly the expected exit code, one clear `bucket-migrate:` line matching `message`, no stack trace. */
function assertRefused(t: Test, result: CliResult, code: number, message: RegExp, what: string): void {
  t.equal(result.code, code, `${what}: exit ${code}\n${result.stderr}`);
  const errors = result.stderr.split('\n').filter((l) => l.startsWith('bucket-migrate:') || /^error:/.test(l));
  t.ok(errors.length >= 1 && errors.length <= 2, `${what}: one error line\n${result.stderr}`);
  t.match(result.stderr, message, `${what}: says what is wrong`);
  t.notMatch(result.stderr, /\n\s+at .*\(.*:\d+:\d+\)/, `${what}: no stack trace`);
}

/** Runs CLI invocations three at a time (each is a Node start-up), results in order. */
async function runAll<T>(jobs: Array<() => Promise<T>>, width = 3): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < jobs.length) {
        const i = next++;
        results[i] = await jobs[i]!();
      }
    }),
  );
  return results;
}

function withUser(url: string, user: string): string {
  const parsed = new URL(url);
  parsed.username = user;
  return parsed.toString();
}

async function seeded(t: Test, count = 20): Promise<TestEnv> {
  const env = await setupTestEnv(t);
  const seed = await runCli(['seed', '--count', String(count), '--quiet'], { env: env.env });
  t.equal(seed.code, 0, seed.stderr);
  return env;
}

t.test('unreachable or misconfigured services', async (t) => {
  const env = await seeded(t);
  const planned = await runCli(['plan'], { env: env.env });
  t.equal(planned.code, 0);
  const before = await fingerprint(env);
  const cases: Array<[string, NodeJS.ProcessEnv, string[], RegExp]> = [
    ['no DATABASE_URL', { DATABASE_URL: '' }, ['execute'], /DATABASE_URL is not set/],
    ['unreachable database', { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x' }, ['execute'], /cannot connect to the database/],
    ['missing database', { DATABASE_URL: env.databaseUrl.replace(env.dbName, `${env.dbName}_nope`) }, ['plan'], /cannot connect to the database.*does not exist/],
    ['unknown database role', { DATABASE_URL: withUser(env.databaseUrl, 'nobody_here') }, ['plan'], /cannot connect to the database/],
    ['not a postgres URL', { DATABASE_URL: 'mysql://x@y/z' }, ['plan'], /must start with postgres:\/\//],
    ['unreachable S3', { S3_ENDPOINT: 'http://127.0.0.1:1' }, ['execute'], /cannot reach S3.*S3_ENDPOINT/],
    ['wrong access key', { AWS_ACCESS_KEY_ID: 'AKIAWRONGWRONGWRONG' }, ['execute'], /S3 rejected the credentials/],
    ['wrong secret key', { AWS_SECRET_ACCESS_KEY: 'wrong-secret-wrong-secret' }, ['execute'], /S3 rejected the credentials/],
    ['wrong secret key, plan --list', { AWS_SECRET_ACCESS_KEY: 'wrong-secret-wrong-secret' }, ['plan', '--list'], /S3 rejected the credentials/],
    ['missing table', { MIGRATE_TABLE: 'no_such_table' }, ['plan'], /table no_such_table does not exist/],
    ['missing path column', { MIGRATE_PATH_COLUMN: 'no_such_column' }, ['plan'], /column no_such_column does not exist/],
    ['missing id column', {}, ['plan', '--id-column', 'no_such_id'], /column no_such_id does not exist/],
    ['missing ledger', { LEDGER_SCHEMA: 'never_planned' }, ['execute'], /no ledger in schema never_planned.*plan/],
  ];
  const results = await runAll(cases.map(([, override, args]) => () => runCli(args, { env: { ...env.env, ...override }, timeoutMs: 30_000 })));
  cases.forEach(([what, , , message], i) => {
    // Wrong settings are configuration errors: exit 2, before anything is touched.
    assertRefused(t, results[i]!, 2, message, what);
  });
  t.equal(await fingerprint(env), before, 'nothing changed');

  // A bucket that does not exist (deleted after plan; empty, as seed made no modern avatars).
  await env.s3client.send(new DeleteBucketCommand({ Bucket: env.targetBucket }));
  const missingBucket = await runCli(['execute'], { env: env.env });
  assertRefused(t, missingBucket, 2, new RegExp(`TARGET_BUCKET ${env.targetBucket} does not exist`), 'missing target bucket');
  const missingSource = await runCli(['plan', '--list', '--source-bucket', 'no-such-bucket-here', '--ledger-schema', 'other'], { env: env.env });
  assertRefused(t, missingSource, 2, /no-such-bucket-here does not exist/, 'missing source bucket');
  t.same(await ledgerStates(env.databaseUrl), { pending: 20 }, 'the ledger is untouched');
});

t.test('flags out of range and conflicting settings', async (t) => {
  const env = await seeded(t, 3);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const before = await fingerprint(env);
  const cases: Array<[string[], RegExp, NodeJS.ProcessEnv?]> = [
    [['execute', '--threads', '0'], /--threads must be between 1 and 256, got 0/],
    [['execute', '--threads', '100000'], /--threads must be between/],
    [['execute', '--threads', 'two'], /--threads must be a whole number/],
    [['execute', '--batch-size', '0'], /--batch-size must be between/],
    [['execute', '--batch-size', '10001'], /--batch-size must be between/],
    [['execute', '--concurrency', '0'], /--concurrency must be between/],
    [['execute', '--concurrency', '-3'], /--concurrency must be between/],
    [['execute', '--max-rps', '-1'], /--max-rps must be between/],
    [['execute', '--max-rps', '1.5'], /--max-rps must be a whole number/],
    [['execute', '--lease-seconds', '1'], /--lease-seconds must be between/],
    [['execute', '--max-attempts', '0'], /--max-attempts must be between/],
    [['execute', '--part-size', 'big'], /--part-size must be a size/],
    [['execute', '--dest-check', 'maybe'], /dest-check/],
    [['execute', '--no-such-flag'], /unknown option/],
    [['plan', '--orphans', 'skip'], /--orphans.*--list/],
    [['execute', '--source-prefix', 'image'], /SOURCE_PREFIX|--source-prefix must end with '\/'/],
    [['execute', '--target-prefix', '/avatar/'], /must not start with '\/'/],
    [['execute', '--target-bucket', 'Not_A_Bucket'], /must be a valid bucket name/],
    [['execute', '--target-bucket', 'same-bkt', '--source-bucket', 'same-bkt', '--target-prefix', 'image/'], /name the same location/],
    [['execute', '--target-bucket', 'same-bkt', '--source-bucket', 'same-bkt', '--target-prefix', 'image/avatar/'], /nested/],
  ];
  const results = await runAll(cases.map(([args, , override]) => () => runCli(args, { env: { ...env.env, ...override } })));
  cases.forEach(([args, message], i) => assertRefused(t, results[i]!, 2, message, args.join(' ')));
  t.equal(await fingerprint(env), before, 'nothing changed');
});

t.test('a ledger planned with one configuration and executed with another', async (t) => {
  const env = await seeded(t, 5);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const before = await fingerprint(env);
  for (const [flag, value] of [
    ['--target-prefix', 'elsewhere/'],
    ['--source-prefix', 'img/'],
    ['--target-bucket', env.sourceBucket],
  ] as const) {
    const result = await runCli(['execute', flag, value], { env: env.env });
    assertRefused(t, result, 2, /was planned for .* not .*--ledger-schema/, `execute ${flag} ${value}`);
    const replan = await runCli(['plan', flag, value], { env: env.env });
    assertRefused(t, replan, 2, /was planned for/, `plan ${flag} ${value} into the same ledger`);
  }
  t.equal(await fingerprint(env), before, 'nothing changed');
  t.same(await ledgerStates(env.databaseUrl), { pending: 5 });
});

t.test('a source prefix that matches nothing', async (t) => {
  const env = await seeded(t, 4);
  const before = await fingerprint(env);
  const args = ['--source-prefix', 'nothing-here/'];
  const plan = await runCli(['plan', '--json', ...args], { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  t.match(JSON.parse(plan.stdout), { total: 0, snapshot: { added: 0 } }, 'plan reports 0');
  const exec = await runCli(['execute', '--quiet', ...args], { env: env.env });
  t.equal(exec.code, 0, `execute does nothing and exits 0\n${exec.stderr}`);
  t.match(exec.stderr, /0 keys moved/);
  t.equal(await fingerprint(env), before, 'nothing changed');
});

t.test('awkward paths in the table', async (t) => {
  const env = await setupTestEnv(t);
  // A few ordinary avatars plus every awkward key seed knows (spaces, +, %, ?, #, ;, :, &, =,
  // non-ASCII, nested dirs, a 0-byte object, a key of exactly 1,024 bytes after the move).
  t.equal((await runCli(['seed', '--count', '3', '--awkward', '--quiet'], { env: env.env })).code, 0);
  // 1,024 bytes: the longest legal source key, whose destination (avatar/ is one byte longer) is not legal.
  const tooLong = `image/${Array.from({ length: 5 }, () => 'y'.repeat(202)).join('/')}.png`;
  t.equal(Buffer.byteLength(tooLong), 1024, 'a legal source key whose destination would pass 1,024 bytes');
  await putObject(env.s3client, env.sourceBucket, tooLong, 'long');
  // The last names the target prefix, so it is not "outside": it is left alone as a row already moved.
  const outside = [null, '', '/image/avatar-1.png', 'elsewhere/a.png', 'IMAGE/avatar-1.png', 'image', 'avatar/../image/x.png'];
  const control = 'image/tab\there.png';
  await query(
    env.databaseUrl,
    `insert into avatars (path) select unnest($1::varchar[])`,
    [[...outside, tooLong, control, 'image/avatar-1.png', 'image/avatar-1.png', 'image/ünïcödé-头像.png']],
  );
  const baseline = await captureBaseline(env);

  const plan = await runCli(['plan', '--json'], { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  const result = JSON.parse(plan.stdout) as { snapshot: { refused: number }; outside?: Record<string, number> };
  t.equal(result.snapshot.refused, 2, 'the too-long and the control-character keys are refused at plan time');
  t.match(result.outside, { null: 1, empty: 1, leadingSlash: 1, other: 3 }, 'rows outside both prefixes are counted');
  const human = await runCli(['plan'], { env: env.env });
  t.match(human.stdout, /6 rows outside both prefixes left alone/, 'and reported');

  const exec = await runCli(['execute', '--threads', '1', '--quiet', '--backoff-seconds', '0'], { env: env.env });
  // Refused keys are `failed`, which is exit 1 (documented), with their reason kept.
  t.equal(exec.code, 1, exec.stderr);
  const failed = await query<{ src_key: string; last_error: string }>(
    env.databaseUrl,
    `select src_key, last_error from bucket_migrate.migration_ledger where state = 'failed' order by src_key`,
  );
  // image/avatar-1.png is moved (its rows point at the copy) but its source
  // is kept: the row '/image/avatar-1.png' names it in another spelling, and
  // the delete guard never deletes an object a row names (issue 12).
  t.match(
    failed.map((f) => [f.src_key, f.last_error]),
    [
      ['image/avatar-1.png', /^delete refused: row \d+ names the source as "\/image\/avatar-1\.png"; source kept$/],
      [control, 'key contains control characters, which S3 listings cannot carry'],
      [tooLong, 'destination key is longer than 1024 bytes'],
    ],
  );
  t.equal(failed.length, 3, 'and no other key failed');

  const rows = await query<{ id: string; path: string | null }>(env.databaseUrl, 'select id::text as id, path from avatars order by id');
  const problems: string[] = [];
  const target = await listObjects(env.s3client, env.targetBucket, 'avatar/');
  for (const row of rows) {
    const was = baseline.rows.get(row.id) ?? null;
    const movable = was !== null && was.startsWith('image/') && was !== tooLong && was !== control;
    if (!movable) {
      if (row.path !== was) problems.push(`row ${row.id} changed: ${JSON.stringify(was)} -> ${JSON.stringify(row.path)}`);
      continue;
    }
    const want = `avatar/${was.slice('image/'.length)}`;
    if (row.path !== want) problems.push(`row ${row.id}: ${JSON.stringify(row.path)}, expected ${JSON.stringify(want)}`);
    const copy = target.get(want);
    const original = baseline.objects.get(was);
    if (!copy || !original || copy.etag !== original.etag || copy.size !== original.size) problems.push(`object ${want} is not an identical copy`);
  }
  t.same(problems, [], 'awkward keys moved byte-for-byte with their names intact; everything else untouched');
  const dupes = rows.filter((r) => r.path === 'avatar/avatar-1.png');
  t.equal(dupes.length, 3, 'duplicate rows for one key all moved (seed row and two duplicates)');
  const source = await listObjects(env.s3client, env.sourceBucket, 'image/');
  t.same([...source.keys()].sort(), ['image/avatar-1.png', tooLong].sort(), 'only the refused key and the one a spelled row names are left at the source');
});

t.test('a full migration with awkward keys ends validated', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '10', '--awkward', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan', '--list'], { env: env.env })).code, 0);
  const baseline = await captureBaseline(env);
  const exec = await runCli(['execute', '--threads', '2', '--quiet'], { env: env.env });
  t.equal(exec.code, 0, exec.stderr);
  await assertMigrated(t, env, baseline);
});
