/**
 * `validate` proves the end state from the table and the buckets: it passes
 * after a clean run and fails, naming the key or row, for each way the end
 * state can be wrong. One migrated fixture is shared by the subtests, which
 * run in order; each breaks one thing and puts it back.
 */
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { runCli, spawnCli, type CliResult } from './helpers/cli.js';
import { getBytes, putObject, setupTestEnv, type TestEnv } from './helpers/services.js';
import { query, queryPastGuard } from './helpers/db.js';

interface Check {
  name: string;
  ok: boolean;
  skipped: boolean;
  checked: number;
  failureCount: number;
  failures: Array<{ key: string; reason: string; rowId?: string; state?: string | null }>;
  exceptionCount: number;
  exceptions: Array<{ key: string; reason: string; rowId?: string; state?: string | null }>;
  details: Record<string, unknown>;
}
interface Validation {
  version: number;
  ok: boolean;
  planned: number;
  states: Record<string, number>;
  checks: Record<'legacyRows' | 'targetObjects' | 'sourceEmpty' | 'ledgerSettled', Check>;
}


async function cli(env: TestEnv, args: string[], timeoutMs = 60_000): Promise<CliResult> {
  return runCli(args, { env: env.env, timeoutMs });
}

async function validateJson(env: TestEnv, args: string[] = []): Promise<{ code: number | null; result: Validation }> {
  const run = await cli(env, ['validate', '--json', ...args]);
  return { code: run.code, result: JSON.parse(run.stdout) as Validation };
}

t.test('validate on a migrated fixture', async (t) => {
  const env = await setupTestEnv(t);
  for (const args of [['seed', '--count', '200', '--awkward', '--quiet'], ['plan', '--list'], ['execute', '--threads', '2', '--quiet']]) {
    const run = await cli(env, args, 120_000);
    t.equal(run.code, 0, `${args[0]} exits 0`, { stderr: run.stderr });
  }
  const [{ id: firstId, path: firstPath }] = await query<{ id: number; path: string }>(
    env.databaseUrl,
    "select id, path from avatars where path = 'avatar/avatar-17.png'",
  ) as [{ id: number; path: string }];

  await t.test('passes after a clean run, and report states the planned total', async (t) => {
    const run = await cli(env, ['validate']);
    t.equal(run.code, 0, 'exit 0', { stdout: run.stdout, stderr: run.stderr });
    t.match(run.stdout, /validate: OK: 4 of 4 checks hold/);

    const { code, result } = await validateJson(env);
    t.equal(code, 0);
    t.equal(result.version, 1);
    t.equal(result.ok, true);
    t.equal(result.planned, 212);
    t.equal(result.states.done, 212);
    t.equal(result.checks.targetObjects.checked, 212, 'every migrated row was merged with the listing');
    t.equal(result.checks.targetObjects.details.objectsListed, 212);
    t.equal(result.checks.targetObjects.details.mode, 'full');
    t.equal(result.checks.ledgerSettled.checked, 212);
    for (const check of Object.values(result.checks)) {
      t.same([check.ok, check.skipped, check.failureCount, check.failures], [true, false, 0, []], check.name);
    }

    const report = await cli(env, ['report', '--json']);
    t.equal(report.code, 0);
    const parsed = JSON.parse(report.stdout) as { planned: number; states: Record<string, number> };
    t.equal(parsed.planned, 212);
    t.equal(parsed.states.done, 212);
  });

  await t.test('fails and names the key when a migrated object is deleted from the target', async (t) => {
    const bytes = (await getBytes(env.s3client, env.targetBucket, firstPath))!;
    await env.s3client.send(new DeleteObjectCommand({ Bucket: env.targetBucket, Key: firstPath }));
    const run = await cli(env, ['validate']);
    t.equal(run.code, 1, 'exit 1');
    t.match(run.stdout, /\[FAIL\] target-objects/);
    t.match(run.stdout, `row ${firstId} names s3://${env.targetBucket}/${firstPath}, which does not exist`);

    const { code, result } = await validateJson(env);
    t.equal(code, 1);
    t.equal(result.ok, false);
    t.equal(result.checks.targetObjects.failureCount, 1);
    t.match(result.checks.targetObjects.failures[0], { key: firstPath, rowId: String(firstId), state: 'done' });
    t.equal(result.checks.legacyRows.ok, true, 'the other checks still hold');

    await putObject(env.s3client, env.targetBucket, firstPath, bytes, { ContentType: 'image/png' });
  });

  await t.test('fails when a row is set back to a legacy path', async (t) => {
    const legacy = firstPath.replace(/^avatar\//, 'image/');
    await queryPastGuard(env.databaseUrl, 'update avatars set path = $1 where id = $2', [legacy, firstId]);
    const run = await cli(env, ['validate']);
    t.equal(run.code, 1, 'exit 1');
    t.match(run.stdout, `row ${firstId} names s3://${env.sourceBucket}/${legacy}, which does not exist (ledger: key done)`, 'broken, not unfinished: the source is gone');
    const { result } = await validateJson(env);
    t.equal(result.checks.legacyRows.ok, false);
    t.match(result.checks.legacyRows.failures, [{ key: legacy, rowId: String(firstId), state: 'done' }]);
    await query(env.databaseUrl, 'update avatars set path = $1 where id = $2', [firstPath, firstId]);
  });

  await t.test('fails when an object of the wrong size sits at a destination', async (t) => {
    const key = 'avatar/ünïcödé-头像.png';
    const bytes = (await getBytes(env.s3client, env.targetBucket, key))!;
    await putObject(env.s3client, env.targetBucket, key, 'not the avatar');
    const { code, result } = await validateJson(env);
    t.equal(code, 1);
    t.equal(result.checks.targetObjects.failureCount, 1);
    t.match(result.checks.targetObjects.failures[0], { key, reason: /object is 14 bytes, the source listed at plan was \d+/ });

    // Same size, other bytes: only the ETag the copy recorded tells them apart.
    const same = Buffer.from(bytes);
    same[same.length - 1] = same[same.length - 1]! ^ 0xff;
    await putObject(env.s3client, env.targetBucket, key, same);
    const again = await validateJson(env);
    t.equal(again.code, 1);
    t.match(again.result.checks.targetObjects.failures[0], { key, reason: /ETag .* differs from the copy's/ });

    await putObject(env.s3client, env.targetBucket, key, bytes);
  });

  await t.test('fails when an unplanned legacy object appears', async (t) => {
    await putObject(env.s3client, env.sourceBucket, 'image/late-arrival.png', 'x');
    const run = await cli(env, ['validate']);
    t.equal(run.code, 1);
    t.match(run.stdout, /image\/late-arrival\.png: not planned/);
    const { result } = await validateJson(env);
    t.match(result.checks.sourceEmpty, { ok: false, failureCount: 1, details: { notPlanned: 1 } });
    t.match(result.checks.sourceEmpty.failures[0], { key: 'image/late-arrival.png', state: null });
    await env.s3client.send(new DeleteObjectCommand({ Bucket: env.sourceBucket, Key: 'image/late-arrival.png' }));
  });

  await t.test('--sample HEADs random rows', async (t) => {
    const clean = await validateJson(env, ['--sample', '10', '--checks', 'target-objects']);
    t.equal(clean.code, 0);
    t.match(clean.result.checks.targetObjects, { ok: true, checked: 10, details: { mode: 'sample', sample: 10 } });
    t.equal(clean.result.checks.legacyRows.skipped, true, '--checks leaves the others out');

    const bytes = (await getBytes(env.s3client, env.targetBucket, firstPath))!;
    await env.s3client.send(new DeleteObjectCommand({ Bucket: env.targetBucket, Key: firstPath }));
    // A sample as large as the table takes every row, so the deleted one is found.
    const run = await cli(env, ['validate', '--sample', '1000']);
    t.equal(run.code, 1);
    t.match(run.stdout, `row ${firstId} names s3://${env.targetBucket}/${firstPath}, which does not exist`);
    t.match(run.stdout, /212 random rows under avatar\/ HEADed/);
    await putObject(env.s3client, env.targetBucket, firstPath, bytes, { ContentType: 'image/png' });
  });

  await t.test('known exceptions pass, and fail with --strict', async (t) => {
    // A row whose object never existed: the move leaves its key missing.
    await query(env.databaseUrl, "insert into avatars (path) values ('image/ghost.png')");
    t.equal((await cli(env, ['plan'])).code, 0);
    t.equal((await cli(env, ['execute', '--threads', '1', '--quiet'])).code, 0);
    // Every subtest above put back what it broke, so only the new exception is left.
    const { code, result } = await validateJson(env);
    t.equal(code, 0, 'a missing key is a known exception');
    t.match(result.checks.legacyRows, { ok: true, exceptionCount: 1, exceptions: [{ key: 'image/ghost.png', state: 'missing' }] });

    const strict = await cli(env, ['validate', '--strict']);
    t.equal(strict.code, 1, '--strict fails on it');
    t.match(strict.stdout, /known exceptions \(failing with --strict\):\n\s+row \d+ names s3:\/\/[^/]+\/image\/ghost\.png, which does not exist: known exception: key is missing/);
  });

  await t.test('a live key fails ledger-settled and names its stale lease', async (t) => {
    await query(
      env.databaseUrl,
      "update bucket_migrate.migration_ledger set state = 'copied', locked_by = 'host:1:dead/w0', locked_until = now() - interval '1 minute' where src_key = 'image/avatar-3.png'",
    );
    const { code, result } = await validateJson(env, ['--checks', 'ledger-settled']);
    t.equal(code, 1);
    t.match(result.checks.ledgerSettled, {
      ok: false,
      failureCount: 1,
      failures: [{ key: 'image/avatar-3.png', state: 'copied', lockedBy: 'host:1:dead/w0', reason: /stale lease by host:1:dead\/w0/ }],
      details: { liveKeys: 1, staleLeases: [{ owner: 'host:1:dead/w0', keys: 1 }] },
    });
    await query(env.databaseUrl, "update bucket_migrate.migration_ledger set state = 'done', locked_by = null, locked_until = null where src_key = 'image/avatar-3.png'");
  });

  await t.test('a key left reverting (a revert stopped half-way) fails ledger-settled', async (t) => {
    await query(env.databaseUrl, "update bucket_migrate.migration_ledger set state = 'reverting' where src_key = 'image/avatar-4.png'");
    const { code, result } = await validateJson(env, ['--checks', 'ledger-settled']);
    t.equal(code, 1);
    t.match(result.checks.ledgerSettled, { ok: false, failureCount: 1, failures: [{ key: 'image/avatar-4.png', state: 'reverting', reason: /still reverting/ }] });
    await query(env.databaseUrl, "update bucket_migrate.migration_ledger set state = 'done' where src_key = 'image/avatar-4.png'");
  });

  await t.test('usage errors exit 2', async (t) => {
    const bad = await cli(env, ['validate', '--checks', 'bogus']);
    t.equal(bad.code, 2);
    t.match(bad.stderr, /unknown check "bogus"/);
    const other = await cli(env, ['validate', '--target-prefix', 'elsewhere/']);
    t.equal(other.code, 2, 'a ledger planned for another move is refused');
    t.match(other.stderr, /was planned for/);
  });
});

t.test('validate without a ledger exits 2', async (t) => {
  const env = await setupTestEnv(t);
  const run = await cli(env, ['validate']);
  t.equal(run.code, 2);
  t.match(run.stderr, /there is no ledger in schema bucket_migrate: run bucket-migrate plan first/);
});

/**
 * What this proves: the full merge's memory does not grow with the number
 * of rows. The same 1,000 objects (long keys) are validated against 20,000
 * rows and then 200,000 rows (each object named by many rows, which the
 * merge handles as repeated paths), both with the V8 heap capped at 40 MB.
 * Holding the 200k rows would need over 50 MB of heap (each path is ~175
 * bytes, plus the row objects), so an implementation that buffers them, or
 * reads them with one plain query, dies of heap exhaustion here. The peak
 * RSS of the CLI process (VmHWM from /proc, polled until it exits) must
 * also grow by less than 20 MB for 10x the rows. Object count is kept small
 * to keep the test fast; the listing side is paged the same way, so its
 * memory does not depend on the object count either.
 */
t.test('the full validate stays within constant memory at 200k rows', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await cli(env, ['seed', '--count', '0', '--quiet'])).code, 0);
  t.equal((await cli(env, ['plan'])).code, 0);
  const HEAP_CAP_MB = 40;
  const dir = `avatar/${'d'.repeat(150)}`;
  const objects = 1_000;
  const keys = Array.from({ length: objects }, (_, i) => `${dir}/obj-${String(i).padStart(5, '0')}.png`);
  for (let i = 0; i < keys.length; i += 50) {
    await Promise.all(keys.slice(i, i + 50).map((key) => putObject(env.s3client, env.targetBucket, key, 'x')));
  }
  const addRows = (from: number, to: number) =>
    query(
      env.databaseUrl,
      `insert into avatars (path) select $1 || '/obj-' || lpad((g % ${objects})::text, 5, '0') || '.png' from generate_series($2::int, $3::int) as g`,
      [dir, from, to],
    );

  const peakRss = async (): Promise<{ code: number | null; peakKb: number; result: Validation }> => {
    // Appended, not replaced: tap's coverage hooks travel in NODE_OPTIONS too.
    const nodeOptions = `${env.env.NODE_OPTIONS ?? ''} --max-old-space-size=${HEAP_CAP_MB}`.trim();
    const spawned = spawnCli(['validate', '--json'], { env: { ...env.env, NODE_OPTIONS: nodeOptions }, timeoutMs: 120_000 });
    const pid = spawned.child.pid!;
    let peakKb = 0;
    const { readFile } = await import('node:fs/promises');
    const poll = setInterval(() => {
      readFile(`/proc/${pid}/status`, 'utf8')
        .then((status) => {
          const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
          if (hwm) peakKb = Math.max(peakKb, Number(hwm[1]));
        })
        .catch(() => undefined);
    }, 25);
    const run = await spawned.result;
    clearInterval(poll);
    if (run.code !== 0) t.comment(run.stderr.slice(-2000));
    return { code: run.code, peakKb, result: JSON.parse(run.stdout || '{}') as Validation };
  };

  await addRows(1, 20_000);
  const small = await peakRss();
  t.equal(small.code, 0, `passes at 20k rows with a ${HEAP_CAP_MB} MB heap`);
  t.equal(small.result.checks.targetObjects.checked, 20_000);

  await addRows(20_001, 200_000);
  const large = await peakRss();
  t.equal(large.code, 0, `passes at 200k rows with a ${HEAP_CAP_MB} MB heap`);
  t.equal(large.result.checks.targetObjects.checked, 200_000);
  t.equal(large.result.checks.targetObjects.details.objectsListed, objects);

  const growthMb = (large.peakKb - small.peakKb) / 1024;
  t.comment(`peak RSS: ${(small.peakKb / 1024).toFixed(1)} MB at 20k rows, ${(large.peakKb / 1024).toFixed(1)} MB at 200k rows`);
  t.ok(small.peakKb > 0 && large.peakKb > 0, 'RSS was measured');
  t.ok(growthMb < 20, `peak RSS grew by ${growthMb.toFixed(1)} MB for 10x the rows (bound: 20 MB)`);
});
