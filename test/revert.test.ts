/**
 * `revert`: after a full run (copy back, rows back, target copies deleted)
 * and after `--keep-source` (rows back only). An invariant observer runs
 * throughout, pointed the other way round: during a revert rows move off
 * the target, and the tool only ever deletes a target object after no row
 * names it, while the source only gains objects.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { avatarPng } from '../src/seed/png.js';
import { plannedTestEnv } from './helpers/planned-env.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { listKeys, objectExists, putObject, setupTestEnv, type TestEnv } from './helpers/services.js';
import { startFaultProxy } from './support/fault-proxy.js';
import { observeTestEnv } from './support/invariant-observer.js';

/** The observer for a revert: "source" is where rows move off (the target prefix). */
function observeRevert(env: TestEnv) {
  return observeTestEnv(undefined, env, { reverse: true });
}

async function paths(env: TestEnv): Promise<string[]> {
  return (await query<{ path: string }>(env.databaseUrl, 'select path from avatars order by id')).map((r) => r.path);
}

t.test('revert after a full run: a canary, then the rest, then a no-op', async (t) => {
  const env = await plannedTestEnv(t, 50);
  const before = await paths(env); // plan reads the table only: these are the seeded paths
  const run = await runCli(['execute', '--quiet'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 50 });

  const observer = observeRevert(env);
  const canary = await runCli(['revert', '--limit', '10', '--batch-size', '4', '--quiet'], { env: env.env });
  t.equal(canary.code, 0, canary.stderr);
  t.match(canary.stderr, /revert: 10 keys reverted .*\(10 copied back, 0 with their source still in place/);
  t.same(await ledgerStates(env.databaseUrl), { done: 40, reverted: 10 });
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 10);
  t.equal((await listKeys(env.s3client, env.targetBucket, 'avatar/')).length, 40);
  // Reverted keys are where the operator put them: known exceptions, not an unfinished migration.
  const midway = await runCli(['validate'], { env: env.env });
  t.equal(midway.code, 0, midway.stdout + midway.stderr);
  t.match(midway.stdout, /legacy-rows: 0 rows naming a key under image\/ without a known reason, 10 known exceptions/);
  t.match(midway.stdout, /image\/avatar-\d+\.png: known exception: key is reverted/);
  t.equal((await runCli(['validate', '--strict'], { env: env.env })).code, 1, '--strict fails them, like every exception');

  const rest = await runCli(['revert', '--batch-size', '7'], { env: env.env });
  t.equal(rest.code, 0, rest.stderr);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 50 });
  t.same(await paths(env), before, 'every row names its original key again');
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 50, 'every source is back');
  t.same(await listKeys(env.s3client, env.targetBucket, 'avatar/'), [], 'every target copy is gone');
  const reverted = await query<{ n: number }>(
    env.databaseUrl,
    `select count(*)::int as n from bucket_migrate.migration_ledger where rows_reverted = rows_updated and reverted_at is not null and locked_by is null`,
  );
  t.equal(reverted[0]?.n, 50, 'the ledger records which rows went back');

  const again = await runCli(['revert', '--quiet'], { env: env.env, timeoutMs: 20_000 });
  t.equal(again.code, 0, again.stderr);
  t.match(again.stderr, /revert: 0 keys reverted/);

  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
});

t.test('revert after --keep-source moves rows only; a row the application changed is left alone', async (t) => {
  const env = await plannedTestEnv(t, 20);
  const before = await paths(env); // plan reads the table only: these are the seeded paths
  t.equal((await runCli(['execute', '--keep-source', '--quiet'], { env: env.env })).code, 0);
  await query(env.databaseUrl, `update avatars set path = 'uploads/avatar-1-new.png' where id = 1`);

  const observer = observeRevert(env);
  const back = await runCli(['revert', '--quiet'], { env: env.env });
  t.equal(back.code, 0, back.stderr);
  t.match(back.stderr, /revert: 20 keys reverted .*\(0 copied back, 20 with their source still in place: rows only\)/);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 20 });
  const now = await paths(env);
  t.equal(now[0], 'uploads/avatar-1-new.png', 'the changed row is not touched');
  t.same(now.slice(1), before.slice(1));
  const one = await query<{ rows_reverted: string[] }>(env.databaseUrl, `select rows_reverted from bucket_migrate.migration_ledger where src_key = 'image/avatar-1.png'`);
  t.same(one[0]?.rows_reverted, []);
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 20, 'sources untouched');
  t.equal((await listKeys(env.s3client, env.targetBucket, 'avatar/')).length, 20, 'target copies left in place');
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
});

t.test('revert killed (SIGKILL) with keys part-way back, then resumed', async (t) => {
  const env = await plannedTestEnv(t, 60);
  const before = await paths(env); // plan reads the table only: these are the seeded paths
  t.equal((await runCli(['execute', '--quiet'], { env: env.env })).code, 0);
  // Slow target deletes (DeleteObjects is a POST) hold keys in `reverting`: rows back, copy not yet deleted.
  const proxy = await startFaultProxy(env.s3.endpoint);
  t.teardown(() => proxy.close());
  proxy.setConfig({ latencyMs: 2_000, match: (r) => r.method === 'POST' });
  const cliEnv = { ...env.env, S3_ENDPOINT: proxy.endpoint };
  const observer = observeRevert(env);
  const args = ['revert', '--batch-size', '5', '--concurrency', '4', '--lease-seconds', '2', '--backoff-seconds', '0', '--quiet'];
  let killedReverting = 0;
  for (let round = 0; round < 3; round++) {
    const child = spawnCli(args, { env: cliEnv, timeoutMs: 60_000 });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const rows = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from bucket_migrate.migration_ledger where state = 'reverting'`);
      if ((rows[0]?.n ?? 0) > 0 || Date.now() > deadline) {
        if ((rows[0]?.n ?? 0) > 0) killedReverting += 1;
        break;
      }
      await sleep(25);
    }
    child.child.kill('SIGKILL');
    t.equal((await child.result).signal, 'SIGKILL', `round ${round + 1}: killed`);
  }
  t.equal(killedReverting, 3, 'every kill left keys in reverting');
  proxy.setConfig({});
  const final = await runCli(['revert', '--lease-seconds', '2', '--quiet'], { env: cliEnv, timeoutMs: 120_000 });
  t.equal(final.code, 0, final.stderr);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 60 });
  t.same(await paths(env), before, 'every row names its original key again');
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 60);
  t.same(await listKeys(env.s3client, env.targetBucket, 'avatar/'), []);
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
});

t.test('a key revert gives up on in reverting (a row names its target in another spelling) is finished forward by execute --retry-failed', async (t) => {
  const env = await plannedTestEnv(t, 6);
  const run = await runCli(['execute', '--quiet'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  // After cutover the application writes a row naming one copy with a leading '/'.
  const spelled = (await query<{ id: string }>(env.databaseUrl, `insert into avatars (path) values ('/avatar/avatar-1.png') returning id::text`))[0]!.id;

  const backward = observeRevert(env);
  const reverted = await runCli(['revert', '--quiet'], { env: env.env });
  await backward.stop();
  t.same(backward.violations, [], `revert: no row ever named a missing object (${backward.checks} checks)`);
  t.equal(reverted.code, 1, 'a key given up on makes revert exit 1');
  const given = await query<{ state: string; failed_state: string | null; last_error: string | null }>(
    env.databaseUrl,
    `select state, failed_state, last_error from bucket_migrate.migration_ledger where src_key = 'image/avatar-1.png'`,
  );
  t.match(given[0], { state: 'failed', failed_state: 'reverting', last_error: /names the target as "\/avatar\/avatar-1\.png": target kept/ });
  t.same(await ledgerStates(env.databaseUrl), { failed: 1, reverted: 5 });

  // Before the fix, --retry-failed put the key back in `reverting`, which
  // execute never claims: it stayed there, and validate failed for ever
  // (the soak, seed 5004).
  const forward = observeTestEnv(t, env);
  const retry = await runCli(['execute', '--retry-failed', '--quiet'], { env: env.env });
  await forward.stop();
  t.same(forward.violations, [], `execute: no row ever named a missing object (${forward.checks} checks)`);
  t.equal(retry.code, 0, retry.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 1, reverted: 5 }, 'the key went forward to done');
  const rows = await query<{ id: string; path: string }>(env.databaseUrl, `select id::text, path from avatars where path like '%avatar-1.png' order by id`);
  t.same(rows.map((r) => r.path).sort(), ['/avatar/avatar-1.png', 'avatar/avatar-1.png'], 'its row moved onto the copy; the spelled row is as written');
  t.equal(rows.find((r) => r.id === spelled)?.path, '/avatar/avatar-1.png');
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/avatar-1'), [], 'its source is gone again');
  const validate = await runCli(['validate'], { env: env.env });
  t.equal(validate.code, 0, validate.stdout + validate.stderr);
});

t.test('revert keeps a target the migration did not make: an identical object was there before the copy, and a row the tool never saw names it', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '4', '--quiet'], { env: env.env })).code, 0);
  // Before the plan: the application already uploaded avatar-1 under the new
  // prefix (the same bytes) and wrote a row naming it there.
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-1.png', avatarPng('image/avatar-1.png'), { ContentType: 'image/png' });
  const own = (await query<{ id: string }>(env.databaseUrl, `insert into avatars (path) values ('avatar/avatar-1.png') returning id::text`))[0]!.id;
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const run = await runCli(['execute', '--quiet'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 4 }, 'the identical destination counted as copied');

  const observer = observeRevert(env);
  const reverted = await runCli(['revert'], { env: env.env });
  await observer.stop();
  // Before the fix, revert deleted avatar/avatar-1.png and row `own` named a missing object.
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
  t.equal(reverted.code, 0, reverted.stderr);
  t.match(reverted.stderr, /1 targets were kept: this migration did not make them/);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 4 });
  t.ok(await objectExists(env.s3client, env.targetBucket, 'avatar/avatar-1.png'), 'the object that was there before is kept');
  t.same(await listKeys(env.s3client, env.targetBucket, 'avatar/'), ['avatar/avatar-1.png'], 'the copies the migration made are gone');
  const row = await query<{ path: string }>(env.databaseUrl, 'select path from avatars where id = $1', [own]);
  t.equal(row[0]?.path, 'avatar/avatar-1.png', 'the row the tool never moved is as the application wrote it');
  const note = await query<{ last_error: string | null }>(env.databaseUrl, `select last_error from bucket_migrate.migration_ledger where src_key = 'image/avatar-1.png'`);
  t.match(note[0]?.last_error, /^target kept: this migration did not make it/, 'the ledger says why');
});
