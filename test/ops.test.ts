/**
 * Operating it in production: the staged cutover (`execute --keep-source`,
 * then `execute --delete-only`), with the invariant observer running
 * throughout.
 */
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { getBytes, listKeys, objectExists, putObject, setupTestEnv } from './helpers/services.js';
import { observeTestEnv } from './support/invariant-observer.js';

t.test('--keep-source then --delete-only, one target removed and one replaced in between', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '50', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const observer = observeTestEnv(t, env);

  const keep = await runCli(['execute', '--keep-source', '--threads', '2', '--batch-size', '7', '--quiet'], { env: env.env });
  t.equal(keep.code, 0, keep.stderr);
  t.same(await ledgerStates(env.databaseUrl), { db_updated: 50 }, 'every key waits in db_updated');
  t.match(keep.stderr, /50 keys moved with their sources kept: validate, then run execute --delete-only/);
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 50, 'every source is still there');
  t.equal((await listKeys(env.s3client, env.targetBucket, 'avatar/')).length, 50, 'every copy is there');
  const moved = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from avatars where path like 'avatar/%'`);
  t.equal(moved[0]?.n, 50, 'every row names its copy');
  const leased = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from bucket_migrate.migration_ledger where locked_by is not null`);
  t.equal(leased[0]?.n, 0, 'parked keys hold no lease');

  // A second keep-source run finds nothing to do and does not wait for the parked keys.
  const again = await runCli(['execute', '--keep-source', '--quiet'], { env: env.env, timeoutMs: 20_000 });
  t.equal(again.code, 0, again.stderr);

  // Between the stages, someone deletes one target and overwrites another.
  await env.s3client.send(new DeleteObjectCommand({ Bucket: env.targetBucket, Key: 'avatar/avatar-3.png' }));
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-5.png', Buffer.from('not the avatar'));

  const del = await runCli(['execute', '--delete-only', '--threads', '2', '--batch-size', '7', '--quiet'], { env: env.env });
  t.equal(del.code, 1, 'refused keys make the run fail');
  t.match(del.stderr, /2 source deletes refused/);
  t.match(del.stderr, /image\/avatar-3\.png -> avatar\/avatar-3\.png: delete refused: target s3:\/\/\S+\/avatar\/avatar-3\.png does not exist; source kept/);
  t.match(del.stderr, /image\/avatar-5\.png -> avatar\/avatar-5\.png: delete refused: target \S+ is \d+ bytes, the copy was \d+; source kept|image\/avatar-5\.png -> avatar\/avatar-5\.png: delete refused: target \S+ has ETag/);
  t.same(await ledgerStates(env.databaseUrl), { done: 48, failed: 2 });
  const refused = await query<{ src_key: string; failed_state: string; last_error: string }>(
    env.databaseUrl,
    `select src_key, failed_state, last_error from bucket_migrate.migration_ledger where state = 'failed' order by id`,
  );
  t.same(refused.map((r) => [r.src_key, r.failed_state]), [
    ['image/avatar-3.png', 'db_updated'],
    ['image/avatar-5.png', 'db_updated'],
  ]);
  t.same((await listKeys(env.s3client, env.sourceBucket, 'image/')).sort(), ['image/avatar-3.png', 'image/avatar-5.png'], 'only the refused sources remain');

  // Repair one target; --retry-failed re-checks it and deletes its source.
  const original = await getBytes(env.s3client, env.sourceBucket, 'image/avatar-3.png');
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-3.png', original!);
  const retry = await runCli(['execute', '--delete-only', '--retry-failed', '--quiet'], { env: env.env });
  t.equal(retry.code, 1, 'avatar-5 is still refused');
  t.same(await ledgerStates(env.databaseUrl), { done: 49, failed: 1 });
  t.notOk(await objectExists(env.s3client, env.sourceBucket, 'image/avatar-3.png'), 'the repaired key finished');
  t.ok(await objectExists(env.s3client, env.sourceBucket, 'image/avatar-5.png'), 'the changed key keeps its source');

  await observer.stop();
  // The two targets were broken by the test itself, not by the tool.
  const foreign = observer.violations.filter((v) => !/avatar-(3|5)\.png$/.test(v.path));
  t.same(foreign, [], `no row ever named a missing object through the tool (${observer.checks} checks)`);

  // revert takes the refused key too: its source is intact, so only its rows move back.
  const back = await runCli(['revert', '--quiet'], { env: env.env });
  t.equal(back.code, 0, back.stderr);
  t.match(back.stderr, /revert: 50 keys reverted .*\(49 copied back, 1 with their source still in place: rows only\)/);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 50 });
  const stillMoved = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from avatars where path not like 'image/%'`);
  t.equal(stillMoved[0]?.n, 0, 'every row names its source again');
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 50);
  // avatar-3's target was put back by hand with the original bytes: its
  // ETag is the copy's, and the ledger says the migration made that copy
  // (copy_made), so revert copies it back and deletes it like any other.
  // Only the foreign object at the refused key (its source still in place:
  // rows only) is left.
  t.notMatch(back.stderr, /targets were kept/);
  t.same(
    await listKeys(env.s3client, env.targetBucket, 'avatar/'),
    ['avatar/avatar-5.png'],
    'only the object the migration did not make is left: the foreign object at the refused key',
  );
});

t.test('--keep-source and --delete-only are exclusive, and neither combines with --dry-run', async (t) => {
  const env = await setupTestEnv(t);
  const both = await runCli(['execute', '--keep-source', '--delete-only'], { env: env.env });
  t.equal(both.code, 2);
  t.match(both.stderr, /--keep-source and --delete-only are two separate runs/);
  const dry = await runCli(['execute', '--delete-only', '--dry-run'], { env: env.env });
  t.equal(dry.code, 2);
  t.match(dry.stderr, /--dry-run does not combine with --delete-only/);
});

/**
 * The whole staged cycle, with the commands docs/RUNBOOK.md gives (keep the
 * two in step): pre-flight SQL, dry run, canary, staged run, report,
 * validate, delete-only, final validate, revert.
 */
t.test('the runbook cycle: canary, keep-source, validate, delete-only, validate, revert', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '50', '--quiet'], { env: env.env })).code, 0);
  const original = await query<{ id: number; path: string }>(env.databaseUrl, 'select id, path from avatars order by id');

  // Pre-flight: rows per prefix (RUNBOOK.md, "Pre-flight").
  const perPrefix = await query<{ prefix: string; n: number }>(
    env.databaseUrl,
    `select case when path like 'image/%' then 'image/' when path like 'avatar/%' then 'avatar/' when path is null then 'null' else 'other' end as prefix,
            count(*)::int as n
     from avatars group by 1 order by 1`,
  );
  t.same(perPrefix, [{ prefix: 'image/', n: 50 }]);

  const plan = await runCli(['plan', '--list'], { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  const dry = await runCli(['execute', '--dry-run', '20'], { env: env.env });
  t.equal(dry.code, 0, dry.stderr);

  const forward = observeTestEnv(t, env);
  const canary = await runCli(['execute', '--keep-source', '--limit', '5', '--threads', '1'], { env: env.env });
  t.equal(canary.code, 0, canary.stderr);
  t.same(await ledgerStates(env.databaseUrl), { db_updated: 5, pending: 45 }, 'the canary moved 5 keys, sources kept');
  const sample = await runCli(['validate', '--sample', '5', '--checks', 'target-objects'], { env: env.env });
  t.equal(sample.code, 0, sample.stdout + sample.stderr);

  const staged = await runCli(['execute', '--keep-source', '--threads', '2'], { env: env.env });
  t.equal(staged.code, 0, staged.stderr);
  const report = await runCli(['report', '--json'], { env: env.env });
  t.equal(report.code, 0, report.stderr);
  t.match(JSON.parse(report.stdout), { states: { db_updated: 50 } });
  const midway = await runCli(['validate', '--checks', 'legacy-rows,target-objects'], { env: env.env });
  t.equal(midway.code, 0, midway.stdout + midway.stderr);
  const early = await runCli(['validate'], { env: env.env });
  t.equal(early.code, 1, 'a full validate fails while the sources are kept, by design');

  const del = await runCli(['execute', '--delete-only', '--threads', '2'], { env: env.env });
  t.equal(del.code, 0, del.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 50 });
  const final = await runCli(['validate', '--strict'], { env: env.env });
  t.equal(final.code, 0, final.stdout + final.stderr);
  await forward.stop();
  t.same(forward.violations, [], `forward: no row ever named a missing object (${forward.checks} checks)`);

  const backward = observeTestEnv(t, env, { reverse: true });
  const revertCanary = await runCli(['revert', '--limit', '5'], { env: env.env });
  t.equal(revertCanary.code, 0, revertCanary.stderr);
  const revertAll = await runCli(['revert'], { env: env.env });
  t.equal(revertAll.code, 0, revertAll.stderr);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 50 });
  t.same(await query(env.databaseUrl, 'select id, path from avatars order by id'), original, 'every row is back');
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 50);
  t.same(await listKeys(env.s3client, env.targetBucket, 'avatar/'), []);
  const after = await runCli(['report', '--json'], { env: env.env });
  t.equal(after.code, 0, after.stderr);
  await backward.stop();
  t.same(backward.violations, [], `revert: no row ever named a missing object (${backward.checks} checks)`);

  // Cleanup after the retention period (RUNBOOK.md, "Cleanup").
  await query(env.databaseUrl, 'drop schema bucket_migrate cascade');
  t.same(await query(env.databaseUrl, `select 1 from pg_namespace where nspname = 'bucket_migrate'`), []);
});
