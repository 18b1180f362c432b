/**
 * A re-plan whose statements deadlock with another writer of the ledger (an
 * execute's commit, the guard trigger's insert) retries instead of failing.
 * The soak met it for real, twice ("plan: unexpected error: deadlock
 * detected"): first in the snapshot's upsert, then, once that was retried,
 * in a `plan --list` whose listing updates a page of ledger rows at a time.
 *
 * The deadlock is made on purpose: a transaction of the test's holds the
 * ledger row of the last key, the plan's statement (which goes in key
 * order) takes the first key's row and queues behind it, and the test's
 * transaction then asks for the first key's row. The test's session waits
 * 60 s before it looks for deadlocks and the plan's 1 s (Postgres's default),
 * so it is the plan's statement that Postgres aborts. Without the retry the
 * plan exits 1; with it, the plan finishes once the test commits.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import t, { type Test } from 'tap';
import { runCli, spawnCli, type CliResult } from './helpers/cli.js';
import { query } from './helpers/db.js';
import { setupTestEnv, type TestEnv } from './helpers/services.js';
import { createDatabase } from '../src/db/database.js';
import { DEFAULT_LIST_RANGES, inRange, ledgerBoundaries, rangesBetween } from '../src/listing/key-ranges.js';
import { compareKeys } from '../src/validate/compare-keys.js';

/** Two planned keys, `first` before `last` in key order (the order the plan's statements lock rows in). */
interface KeyPair {
  first: string;
  last: string;
}

// Two keys in the same order in every collation.
const UPSERTED: KeyPair = { first: 'image/avatar-1.png', last: 'image/avatar-9.png' };

/**
 * Two keys that `plan --list` updates in one statement: the first and last
 * of a key range holding two keys or more. The listing goes in 16 ranges
 * at once, one page statement each, so two keys of different ranges never
 * wait for each other. The boundaries are the plan's own.
 */
async function keysOfOneRange(env: TestEnv): Promise<KeyPair> {
  const db = createDatabase({ url: env.databaseUrl, max: 1 });
  try {
    const ranges = rangesBetween(await ledgerBoundaries(db, 'bucket_migrate', 'src_key', DEFAULT_LIST_RANGES));
    const keys = (await query<{ src_key: string }>(env.databaseUrl, 'select src_key from bucket_migrate.migration_ledger')).map((r) => r.src_key).sort(compareKeys);
    for (const range of ranges) {
      const inside = keys.filter((k) => inRange(range, k));
      if (inside.length >= 2) return { first: inside[0]!, last: inside.at(-1)! };
    }
    throw new Error(`no listing range holds two keys: ${JSON.stringify(ranges)}`);
  } finally {
    await db.destroy();
  }
}

async function seededAndPlanned(t: Test): Promise<TestEnv> {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '20', '--quiet'], { env: env.env })).code, 0, 'seeded');
  t.equal((await runCli(['plan'], { env: env.env })).code, 0, 'first plan');
  return env;
}

/**
 * Runs `plan args` into a deadlock: holds the last key's ledger row, waits
 * until the plan's statement matching `statement` waits for it, then asks
 * for the first key's.
 */
async function planIntoDeadlock(t: Test, env: TestEnv, args: string[], keys: KeyPair, statement: RegExp): Promise<CliResult> {
  const planned = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from bucket_migrate.migration_ledger where src_key = any($1)`, [[keys.first, keys.last]]);
  t.equal(planned[0]!.n, 2, `both keys are planned: ${keys.first}, ${keys.last}`);
  const blocker = new pg.Client({ connectionString: env.databaseUrl });
  blocker.on('error', () => undefined);
  await blocker.connect();
  t.teardown(() => blocker.end().catch(() => undefined));
  await blocker.query(`set deadlock_timeout = '60s'`);
  const blockerPid = (await blocker.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  await blocker.query('begin');
  await blocker.query(`select 1 from bucket_migrate.migration_ledger where src_key = $1 for update`, [keys.last]);

  const plan = spawnCli(args, { env: env.env, timeoutMs: 120_000 });
  // Wait until the plan's statement waits for the last key's row (it holds the first by then).
  const deadline = Date.now() + 60_000;
  for (;;) {
    const waiting = await query<{ query: string }>(env.databaseUrl, `select query from pg_stat_activity where $1::int = any(pg_blocking_pids(pid))`, [blockerPid]);
    if (waiting.length > 0) {
      t.match(waiting[0]!.query, statement, 'the plan waits in the statement under test');
      break;
    }
    if (Date.now() > deadline) {
      t.fail('the plan never waited for the held row');
      break;
    }
    await sleep(50);
  }
  // Closes the cycle: Postgres aborts the plan's statement after its 1 s deadlock_timeout.
  await blocker.query(`select 1 from bucket_migrate.migration_ledger where src_key = $1 for update`, [keys.first]);
  await sleep(200);
  await blocker.query('commit');
  return plan.result;
}

function assertRodeItOut(t: Test, result: CliResult): void {
  t.equal(result.code, 0, `the plan finished (stderr: ${result.stderr.trim().split('\n').slice(-2).join(' | ')})`);
  t.notMatch(result.stderr, /deadlock/, 'no deadlock reached the operator');
}

t.test('a re-plan whose upsert deadlocks with another ledger writer retries and finishes', async (t) => {
  const env = await seededAndPlanned(t);
  // New rows naming both keys: the re-plan's upsert updates both ledger rows, and only those, first then last.
  await query(env.databaseUrl, `insert into avatars (path) values ($1), ($2)`, [UPSERTED.first, UPSERTED.last]);
  assertRodeItOut(t, await planIntoDeadlock(t, env, ['plan'], UPSERTED, /refs as \(/));
  const missing = await query<{ n: number }>(
    env.databaseUrl,
    `select count(*)::int as n from avatars a
     where starts_with(a.path, 'image/')
       and not exists (select 1 from bucket_migrate.migration_ledger l where l.src_key = a.path and a.id::text = any(l.row_ids))`,
  );
  t.equal(missing[0]!.n, 0, 'every row id, the two new ones included, is in the ledger');
});

t.test('a plan --list whose listed page deadlocks with another ledger writer retries and finishes', async (t) => {
  const env = await seededAndPlanned(t);
  // Nothing new in the table: the snapshot touches no ledger row, and the
  // listing's page update (every listed key, in key order) is what waits.
  assertRodeItOut(t, await planIntoDeadlock(t, env, ['plan', '--list'], await keysOfOneRange(env), /listed_run_id = /));
  const unlisted = await query<{ n: number }>(
    env.databaseUrl,
    `select count(*)::int as n from bucket_migrate.migration_ledger
     where src_etag is null or listed_run_id is distinct from (select max(listed_run_id) from bucket_migrate.migration_ledger)`,
  );
  t.equal(unlisted[0]!.n, 0, 'every key has the listing\'s size and ETag, from the same run');
});
