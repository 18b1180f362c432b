/**
 * The last statement before a delete re-confirms each key's lease
 * (`confirmLeases`: still held by this worker, in its state, with more than
 * the safety margin left). A key it does not confirm is not deleted, and it
 * must be given back at once: left leased to a worker that will not act on
 * it, it is out of every claim until the lease runs out. Soak seed 5018 ended
 * a revert that way, with 8 keys `reverting` (rows back, target not deleted)
 * and no run left to finish them (fixed in 3fa00ac).
 *
 * The test makes the confirm fail for real: a transaction opened before the
 * fence holds the worker in its wait for older transactions; meanwhile the
 * test shortens one key's lease below the margin (lease 300 s, margin 10 s;
 * the heartbeat, every 100 s, cannot renew it first), then ends the
 * transaction.
 */
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import t, { type Test } from 'tap';
import { plannedTestEnv } from './helpers/planned-env.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { listKeys, type TestEnv } from './helpers/services.js';
import { observeTestEnv } from './support/invariant-observer.js';

const KEYS = 6;
/** One batch of every key, a lease with a 10 s margin and a heartbeat every 100 s. */
const ONE_BATCH = ['--lease-seconds', '300', '--batch-size', String(KEYS), '--limit', String(KEYS), '--quiet'];

/** A transaction of the test's own, open (it holds a virtual xid) until `end()`. */
async function openTransaction(t: Test, env: TestEnv): Promise<{ end: () => Promise<void> }> {
  const client = new pg.Client({ connectionString: env.databaseUrl, application_name: 'test: older transaction' });
  client.on('error', () => undefined);
  await client.connect();
  await client.query('begin');
  await client.query('select 1');
  let ended = false;
  const end = async () => {
    if (ended) return;
    ended = true;
    await client.query('commit').catch(() => undefined);
    await client.end().catch(() => undefined);
  };
  t.teardown(end);
  return { end };
}

/**
 * Waits until the run has fenced every key (all in `state`, leased), then
 * cuts the lease of the lowest id to 5 s, below the 10 s margin. Returns
 * that key's id and the worker that held it.
 */
async function shortenOneLease(env: TestEnv, state: string, child: ChildProcess): Promise<{ id: number; holder: string }> {
  const deadline = Date.now() + 60_000;
  while ((await ledgerStates(env.databaseUrl))[state] !== KEYS) {
    if (Date.now() > deadline || child.exitCode !== null) {
      throw new Error(`the run never fenced its keys (exit ${child.exitCode}): ${JSON.stringify(await ledgerStates(env.databaseUrl))}`);
    }
    await sleep(50);
  }
  const cut = await query<{ id: number; locked_by: string }>(
    env.databaseUrl,
    `update bucket_migrate.migration_ledger
     set locked_until = now() + interval '5 seconds'
     where id = (select min(id) from bucket_migrate.migration_ledger) and state = $1 and locked_by is not null
     returning id, locked_by`,
    [state],
  );
  if (cut.length !== 1) throw new Error(`no leased ${state} key to shorten`);
  return { id: cut[0]!.id, holder: cut[0]!.locked_by };
}

async function leasedKeys(env: TestEnv): Promise<Array<{ id: number; state: string; locked_by: string }>> {
  return query(env.databaseUrl, 'select id, state, locked_by from bucket_migrate.migration_ledger where locked_by is not null order by id');
}

t.test('revert: a key whose lease ran short during the fence wait is given back, and the run finishes it', async (t) => {
  const env = await plannedTestEnv(t, KEYS);
  t.equal((await runCli(['execute', '--quiet'], { env: env.env })).code, 0);
  const observer = observeTestEnv(t, env, { reverse: true });

  const older = await openTransaction(t, env);
  const revert = spawnCli(['revert', ...ONE_BATCH], { env: env.env, timeoutMs: 120_000 });
  const shortened = await shortenOneLease(env, 'reverting', revert.child);
  await older.end();
  const run = await revert.result;

  t.equal(run.code, 0, run.stderr);
  // Without the release, the key stays `reverting` under the ended run's
  // lease: the run's last pass finds nothing claimable and exits.
  t.same(await ledgerStates(env.databaseUrl), { reverted: KEYS }, `key ${shortened.id} was given back and reverted by the same run`);
  t.same(await leasedKeys(env), [], 'the run holds no lease after it exits');
  t.notMatch(run.stderr, /still reverting/);
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, KEYS, 'every source is back');
  t.same(await listKeys(env.s3client, env.targetBucket, 'avatar/'), [], 'every target copy is gone');

  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
});

t.test('execute: a key whose lease ran short during the fence wait is given back, not held by the ended run', async (t) => {
  const env = await plannedTestEnv(t, KEYS);
  const observer = observeTestEnv(t, env);

  const older = await openTransaction(t, env);
  const execute = spawnCli(['execute', '--threads', '1', ...ONE_BATCH], { env: env.env, timeoutMs: 120_000 });
  const shortened = await shortenOneLease(env, 'deleting', execute.child);
  await older.end();
  const run = await execute.result;

  t.equal(run.code, 0, run.stderr);
  // `--limit` spent: the key is left `deleting` (its rows on the copy, its
  // source not yet deleted), free for the next run to claim at once rather
  // than after the ended run's lease.
  t.same(await ledgerStates(env.databaseUrl), { deleting: 1, done: KEYS - 1 });
  t.same(await leasedKeys(env), [], `key ${shortened.id} is not left leased to ${shortened.holder}`);

  const next = await runCli(['execute', '--quiet'], { env: env.env, timeoutMs: 60_000 });
  t.equal(next.code, 0, next.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: KEYS }, 'the next run finishes it');
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), [], 'every source is deleted');

  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
});
