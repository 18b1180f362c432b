/**
 * A re-plan whose upsert deadlocks with another writer of the ledger (an
 * execute's commit, the guard trigger's insert) retries instead of failing.
 * The soak met it for real ("plan: unexpected error: deadlock detected").
 *
 * The deadlock is made on purpose: a transaction of the test's holds the
 * ledger row of the last key, the plan's upsert (which goes in key order)
 * takes the first key's row and queues behind it, and the test's
 * transaction then asks for the first key's row. The test's session waits
 * 60 s before it looks for deadlocks and the plan's 1 s (Postgres's default),
 * so it is the plan's statement that Postgres aborts. Without the retry the
 * plan exits 1; with it, the plan finishes once the test commits, and every
 * new row id is in the ledger.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import t from 'tap';
import { runCli, spawnCli } from './helpers/cli.js';
import { query } from './helpers/db.js';
import { setupTestEnv } from './helpers/services.js';

t.test('a re-plan that deadlocks with another ledger writer retries and finishes', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '20', '--quiet'], { env: env.env })).code, 0, 'seeded');
  t.equal((await runCli(['plan'], { env: env.env })).code, 0, 'first plan');
  // Two keys in the same order in every collation (the upsert goes in key order).
  const [first, last] = ['image/avatar-1.png', 'image/avatar-9.png'];
  const planned = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from bucket_migrate.migration_ledger where src_key = any($1)`, [[first, last]]);
  t.equal(planned[0]!.n, 2, 'both keys are planned');
  // New rows naming them: the re-plan's upsert updates both ledger rows, and only those, first then last.
  await query(env.databaseUrl, `insert into avatars (path) values ($1), ($2)`, [first, last]);

  const blocker = new pg.Client({ connectionString: env.databaseUrl });
  blocker.on('error', () => undefined);
  await blocker.connect();
  t.teardown(() => blocker.end().catch(() => undefined));
  await blocker.query(`set deadlock_timeout = '60s'`);
  const blockerPid = (await blocker.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  await blocker.query('begin');
  await blocker.query(`select 1 from bucket_migrate.migration_ledger where src_key = $1 for update`, [last]);

  const plan = spawnCli(['plan'], { env: env.env, timeoutMs: 120_000 });
  // Wait until the plan's upsert waits for the last key's row (it holds the first by then).
  const deadline = Date.now() + 60_000;
  for (;;) {
    const waiting = await query<{ n: number }>(
      env.databaseUrl,
      `select count(*)::int as n from pg_stat_activity where $1::int = any(pg_blocking_pids(pid))`,
      [blockerPid],
    );
    if (waiting[0]!.n > 0) break;
    if (Date.now() > deadline) {
      t.fail('the plan never waited for the held row');
      break;
    }
    await sleep(50);
  }
  // Closes the cycle: Postgres aborts the plan's statement after its 1 s deadlock_timeout.
  await blocker.query(`select 1 from bucket_migrate.migration_ledger where src_key = $1 for update`, [first]);
  await sleep(200);
  await blocker.query('commit');

  const result = await plan.result;
  t.equal(result.code, 0, `the plan finished (stderr: ${result.stderr.trim().split('\n').slice(-2).join(' | ')})`);
  t.notMatch(result.stderr, /deadlock/, 'no deadlock reached the operator');
  const missing = await query<{ n: number }>(
    env.databaseUrl,
    `select count(*)::int as n from avatars a
     where starts_with(a.path, 'image/')
       and not exists (select 1 from bucket_migrate.migration_ledger l where l.src_key = a.path and a.id::text = any(l.row_ids))`,
  );
  t.equal(missing[0]!.n, 0, 'every row id, the two new ones included, is in the ledger');
});
