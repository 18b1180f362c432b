/**
 * Leases that expire and are taken over mid-batch. The guard `locked_by = me`
 * on every transition must keep the loser from writing anything.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import t from 'tap';
import { createDatabase } from '../src/db/database.js';
import {
  claimBatch,
  commitRows,
  confirmLeases,
  fenceDeletes,
  markCopied,
  markDone,
  markUnmovable,
  recordFailures,
  releaseLeases,
  renewLeases,
  type LedgerContext,
} from '../src/ledger/state-machine.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { getBytes, putObject, setupTestEnv } from './helpers/services.js';
import { assertMigrated, captureBaseline, ledgerStates, query } from './support/end-state.js';
import { proxyTestEnv } from './support/fault-proxy.js';
import { observeTestEnv } from './support/invariant-observer.js';

t.test('every transition of a worker whose lease was taken over changes nothing', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '5', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const db = createDatabase({ url: env.databaseUrl, max: 2 });
  t.teardown(() => db.destroy());
  const base = { db, schema: 'bucket_migrate', table: { name: 'avatars' }, idColumn: 'id', pathColumn: 'path', idCast: 'int4' };
  const a: LedgerContext = { ...base, me: 'loser' };
  const b: LedgerContext = { ...base, me: 'winner' };
  const expire = () => sql`update bucket_migrate.migration_ledger set locked_until = now() - interval '1 second'`.execute(db);

  const claimedA = await claimBatch(a, 10, 60);
  t.equal(claimedA.length, 5, 'A claims all 5');
  t.same(await claimBatch(b, 10, 60), [], 'B cannot claim a live lease');
  await expire();
  const claimedB = await claimBatch(b, 10, 60);
  t.equal(claimedB.length, 5, 'B takes over the expired leases');
  const ids = claimedB.map((r) => r.id);

  // pending: the loser's writes are refused.
  t.equal(await renewLeases(a, ids, 60), 0, 'A cannot renew');
  t.same(await markCopied(a, ids.map((id) => ({ id, dstEtag: '"x"' }))), [], 'A cannot mark copied');
  t.same(await markUnmovable(a, 'missing', ids.map((id) => ({ id, reason: 'x' }))), [], 'A cannot mark missing');
  t.same(await recordFailures(a, ids.map((id) => ({ id, error: 'x' })), 1, 0), [], 'A cannot record failures');
  t.equal(await releaseLeases(a, ids), 0, 'A cannot release');
  t.same((await markCopied(b, ids.map((id) => ({ id, dstEtag: '"x"' })))).sort(), [...ids].sort(), 'B marks copied');

  // copied: the loser cannot move the rows.
  const before = await query<{ path: string }>(env.databaseUrl, 'select path from avatars order by id');
  t.same(await commitRows(a, ids), [], 'A cannot commit the rows');
  t.same(await query(env.databaseUrl, 'select path from avatars order by id'), before, 'the table is untouched');
  t.equal((await commitRows(b, ids)).length, 5, 'B commits');

  // db_updated: the loser can neither fence nor finish.
  t.same(await fenceDeletes(a, ids, 0), [], 'A cannot fence the deletes');
  t.same(await confirmLeases(a, ids, 'deleting', 60, 0), [], 'A cannot confirm a lease for a delete');
  t.equal((await fenceDeletes(b, ids, 0)).length, 5, 'B fences');
  t.same(await confirmLeases(a, ids, 'deleting', 60, 0), [], 'A still cannot confirm');
  t.same(await markDone(a, ids), [], 'A cannot mark done');
  t.equal((await markDone(b, ids)).length, 5, 'B marks done');
  t.same(await ledgerStates(env.databaseUrl), { done: 5 });
  const attempts = await query<{ attempts: number; failures: number }>(
    env.databaseUrl,
    'select attempts, failures from bucket_migrate.migration_ledger',
  );
  t.ok(attempts.every((r) => r.failures === 0 && r.attempts === 2), 'no failure recorded by the loser');
});

t.test('two processes; one frozen past its lease, taken over mid-batch, then thawed', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '200', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const baseline = await captureBaseline(env);
  const { cliEnv } = await proxyTestEnv(t, env, { latencyMs: 60 });
  const observer = observeTestEnv(t, env);
  const common = ['--lease-seconds', '2', '--backoff-seconds', '0', '--concurrency', '4', '--quiet'];

  const loser = spawnCli(['execute', '--threads', '1', '--pipeline', '1', '--batch-size', '40', ...common], { env: cliEnv, timeoutMs: 120_000 });
  const pid = loser.child.pid!;
  t.teardown(() => void loser.child.kill('SIGCONT'));
  let held: number[] = [];
  const deadline = Date.now() + 30_000;
  while (held.length === 0 && Date.now() < deadline) {
    held = (
      await query<{ id: number }>(
        env.databaseUrl,
        `select id from bucket_migrate.migration_ledger where locked_by like $1 and state = 'pending'`,
        [`%:${pid}:%`],
      )
    ).map((r) => Number(r.id));
    if (held.length === 0) await sleep(20);
  }
  t.ok(held.length > 0, `the first process holds ${held.length} pending keys`);
  process.kill(pid, 'SIGSTOP');

  // Its leases lapse (2 s, no heartbeat while frozen); a second process takes over.
  await sleep(2_500);
  const winner = spawnCli(['execute', '--threads', '2', '--batch-size', '20', ...common], { env: cliEnv, timeoutMs: 120_000 });
  const takeoverDeadline = Date.now() + 60_000;
  let settled = 0;
  while (Date.now() < takeoverDeadline) {
    const rows = await query<{ n: number }>(
      env.databaseUrl,
      `select count(*)::int as n from bucket_migrate.migration_ledger where id = any($1::bigint[]) and state = 'done'`,
      [held],
    );
    settled = rows[0]?.n ?? 0;
    if (settled === held.length) break;
    await sleep(50);
  }
  t.equal(settled, held.length, "the second process finished every key of the frozen one's batch");

  // Thaw the loser: its copies, commits and deletes of that batch must change nothing.
  process.kill(pid, 'SIGCONT');
  const [loserResult, winnerResult] = await Promise.all([loser.result, winner.result]);
  t.equal(loserResult.code, 0, `the thawed process ends cleanly\n${loserResult.stderr}`);
  t.equal(winnerResult.code, 0, `the second process ends cleanly\n${winnerResult.stderr}`);

  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
  await assertMigrated(t, env, baseline);
});

t.test('an --overwrite worker frozen past its lease does not overwrite what was put at the destination since', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '120', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  // Slow requests, so the frozen process still has copies queued when it stops.
  const { cliEnv } = await proxyTestEnv(t, env, { latencyMs: 80 });
  const common = ['--lease-seconds', '2', '--backoff-seconds', '0', '--concurrency', '2', '--keep-source', '--quiet'];

  const loser = spawnCli(['execute', '--overwrite', '--threads', '1', '--pipeline', '1', '--batch-size', '40', ...common], { env: cliEnv, timeoutMs: 120_000 });
  const pid = loser.child.pid!;
  t.teardown(() => void loser.child.kill('SIGCONT'));
  let held: Array<{ id: number; dst_key: string }> = [];
  const deadline = Date.now() + 30_000;
  while (held.length === 0 && Date.now() < deadline) {
    held = await query<{ id: number; dst_key: string }>(
      env.databaseUrl,
      `select id, dst_key from bucket_migrate.migration_ledger where locked_by like $1 and state = 'pending'`,
      [`%:${pid}:%`],
    );
    if (held.length === 0) await sleep(10);
  }
  t.ok(held.length > 0, `the --overwrite process holds ${held.length} pending keys`);
  process.kill(pid, 'SIGSTOP');

  // Its leases lapse; a second process copies and commits those keys
  // (sources kept), then the application uploads new avatars over them.
  await sleep(2_500);
  const winner = await runCli(['execute', '--threads', '2', '--batch-size', '20', ...common], { env: cliEnv, timeoutMs: 120_000 });
  t.equal(winner.code, 0, winner.stderr);
  const states = await query<{ state: string; n: number }>(
    env.databaseUrl,
    `select state, count(*)::int as n from bucket_migrate.migration_ledger where id = any($1::bigint[]) group by state`,
    [held.map((h) => h.id)],
  );
  t.same(states, [{ state: 'db_updated', n: held.length }], 'the second process committed every key of the frozen batch');
  const uploaded = (key: string) => Buffer.from(`the application's new avatar at ${key}`);
  for (const { dst_key } of held) await putObject(env.s3client, env.targetBucket, dst_key, uploaded(dst_key));

  // Thawed, the first process finds its lease gone: none of its queued
  // overwriting copies may leave.
  process.kill(pid, 'SIGCONT');
  const loserResult = await loser.result;
  t.equal(loserResult.code, 0, `the thawed process ends cleanly\n${loserResult.stderr}`);
  const clobbered: string[] = [];
  for (const { dst_key } of held) {
    const bytes = await getBytes(env.s3client, env.targetBucket, dst_key);
    if (!bytes?.equals(uploaded(dst_key))) clobbered.push(dst_key);
  }
  t.same(clobbered, [], `no destination the application wrote after the takeover was overwritten (${held.length} checked)`);
});
