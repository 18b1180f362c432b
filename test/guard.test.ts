/**
 * The delete guard (issue 12): the database never points at a deleted
 * object, whatever the application writes concurrently. One test per
 * finding of the issue, each of which fails on the main before the guard:
 *
 * 1. A staged run while the application inserts and updates rows naming
 *    image/ keys, on a table without a path index. Before: exit 0 and rows
 *    naming deleted objects (nothing looked for them). Now: plan installs the
 *    guard trigger, and the observer sees no broken row. A role that may
 *    neither create triggers nor use an index gets exit 2 on the delete
 *    phase (before: exit 0, a `note:` only).
 * 2. revert after cutover, with application rows naming avatar/ keys.
 *    Before: revert moved back only `rows_updated` and deleted the targets
 *    under the new rows; and a second commit overwrote `rows_updated`.
 * 3. execute --delete-only frozen (SIGSTOP) past its lease while revert
 *    takes its keys back. Before: on waking it deleted the sources revert
 *    had moved the rows back to (no statement ran between the claim and
 *    DeleteObjects). Now: the fence statement is refused (locked_by).
 * 4. plan re-run during execute, with application writes. Before: new rows
 *    were stranded on deleted sources.
 * Plus: a transaction that begins before the fence, writes a legacy path
 * while execute waits, and commits after: the row is recorded by the
 * trigger (REPEATABLE READ) or redirected (READ COMMITTED), never broken
 * (before: broken, nothing waited). And rows naming a key as '/image/x',
 * s3://bucket/image/x or an https URL keep its source (before: deleted).
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import t, { type Test } from 'tap';
import { plannedTestEnv } from './helpers/planned-env.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { getServices, listKeys, setupTestEnv, type TestEnv } from './helpers/services.js';
import { proxyTestEnv } from './support/fault-proxy.js';
import { observeTestEnv } from './support/invariant-observer.js';
import { brokenRows, startWriter } from './support/application.js';
import { createDatabase } from '../src/db/database.js';
import { claimRevert, revertRows, type LedgerContext } from '../src/ledger/state-machine.js';

function observe(t: Test, env: TestEnv, reverse = false) {
  return observeTestEnv(t, env, { reverse });
}

/**
 * The CLI's environment for a fresh login role that may read the table and
 * update its path column, and owns the ledger schema, but has no TRIGGER
 * privilege: the environment of a locked-down production role. The role is
 * dropped at teardown, after the test's database.
 */
async function roleWithoutTrigger(t: Test, env: TestEnv, prefix: string): Promise<NodeJS.ProcessEnv> {
  const { postgres } = await getServices();
  const role = `${prefix}_${randomBytes(4).toString('hex')}`;
  t.teardown(async () => {
    await env.teardown();
    await query(postgres.url, `drop role if exists ${role}`).catch(() => undefined);
  });
  await query(
    env.databaseUrl,
    `create role ${role} login; grant connect on database "${env.dbName}" to ${role}; grant usage on schema public to ${role};
     grant select, update (path) on avatars to ${role}; create schema bucket_migrate authorization ${role};`,
  );
  const url = new URL(env.databaseUrl);
  url.username = role;
  return { ...env.env, DATABASE_URL: url.toString() };
}

t.test('finding 1: a staged run while the application writes image/ paths, no path index: the trigger guard, no broken row', async (t) => {
  const env = await setupTestEnv(t);
  const KEYS = 150;
  t.equal((await runCli(['seed', '--count', String(KEYS), '--quiet'], { env: env.env })).code, 0);
  const plan = await runCli(['plan'], { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  t.match(plan.stderr, /^guard for the delete phase: trigger/m, 'plan says which guard the delete phase will use');
  const observer = observe(t, env);
  const writer = startWriter(env.databaseUrl, KEYS, 'image/', 7);
  const kept = await runCli(['execute', '--keep-source', '--batch-size', '20', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(kept.code, 0, kept.stderr);
  const deleted = await runCli(['execute', '--delete-only', '--batch-size', '20', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(deleted.code, 0, deleted.stderr);
  t.match(deleted.stderr, /^guard: trigger \(/m, 'execute names its guard at the start');
  t.equal(deleted.stderr.split('\n').filter((l) => l.startsWith('guard:')).length, 1, 'in one line');
  await writer.stop();
  t.ok(writer.writes > 50, `the application wrote ${writer.writes} times during the run`);
  // Keys the application kept writing may wait in copied: a last run converges.
  const last = await runCli(['execute', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(last.code, 0, last.stderr);
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a deleted object (${observer.checks} checks)`);
  t.same(await brokenRows(env), [], 'no row names a missing object at the end');
  t.same(await query(env.databaseUrl, `select id from avatars where path like 'image/%'`), [], 'every row moved');
  // A key whose every row the application moved elsewhere before the commit is superseded (its source kept).
  const states = await ledgerStates(env.databaseUrl);
  t.equal((states.done ?? 0) + (states.superseded ?? 0), KEYS, `every key settled: ${JSON.stringify(states)}`);
});

t.test('finding 1: a role without TRIGGER and without a path index gets exit 2 on the delete phase, naming the fix', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '10', '--quiet'], { env: env.env })).code, 0);
  const restricted = await roleWithoutTrigger(t, env, 'bm_guard');
  const plan = await runCli(['plan'], { env: restricted });
  t.equal(plan.code, 0, plan.stderr);
  t.match(plan.stderr, /^guard for the delete phase: none: execute will refuse to delete sources; create an index \(CREATE INDEX CONCURRENTLY ON avatars \(path\)/m);
  const refused = await runCli(['execute'], { env: restricted });
  t.equal(refused.code, 2, 'the delete phase is refused');
  const lines = refused.stderr.trim().split('\n');
  t.equal(lines.length, 1, `one line: ${refused.stderr}`);
  t.match(lines[0], /execute refuses to delete without a guard.*CREATE INDEX CONCURRENTLY ON avatars \(path\).*GRANT TRIGGER ON avatars TO <role>.*--delete-unguarded/);
  t.same(await ledgerStates(env.databaseUrl), { pending: 10 }, 'nothing was touched');
  const keep = await runCli(['execute', '--keep-source', '--quiet'], { env: restricted });
  t.equal(keep.code, 0, `--keep-source still works: ${keep.stderr}`);
  t.equal((await runCli(['execute', '--delete-only', '--quiet'], { env: restricted })).code, 2, '--delete-only is refused too');
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 10, 'every source is still there');
});

t.test('finding 2: revert after cutover moves back rows the application wrote with avatar/ paths; rows_updated accumulates', async (t) => {
  const KEYS = 30;
  const env = await plannedTestEnv(t, KEYS);
  t.equal((await runCli(['execute', '--keep-source', '--quiet'], { env: env.env })).code, 0);
  // A row added after the commit: the delete phase commits key 3 a second time.
  const [late] = await query<{ id: number }>(env.databaseUrl, `insert into avatars (path) values ('image/avatar-3.png') returning id`);
  const run = await runCli(['execute', '--delete-only', '--quiet'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  const [three] = await query<{ row_ids: string[]; rows_updated: string[] }>(
    env.databaseUrl,
    `select row_ids, rows_updated from bucket_migrate.migration_ledger where src_key = 'image/avatar-3.png'`,
  );
  t.same([...three!.rows_updated].sort(), ['3', String(late!.id)].sort(), 'rows_updated holds the rows of both commits');

  // After cutover the application names target keys.
  const added = await query<{ id: number }>(
    env.databaseUrl,
    `insert into avatars (path) select 'avatar/avatar-' || (1 + g % ${KEYS}) || '.png' from generate_series(1, 40) g returning id`,
  );
  await query(env.databaseUrl, `update avatars set path = 'avatar/avatar-9.png' where id = 10`);
  const observer = observe(t, env, true);
  const back = await runCli(['revert', '--batch-size', '7'], { env: env.env });
  t.equal(back.code, 0, back.stderr);
  t.match(back.stderr, /^guard: trigger/m);
  t.match(back.stderr, /41 rows written with a target path after cutover were moved back before their target was deleted/);
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a deleted object (${observer.checks} checks)`);
  t.same(await brokenRows(env), [], 'no row names a deleted object');
  const stillTarget = await query(env.databaseUrl, `select id from avatars where path like 'avatar/%'`);
  t.same(stillTarget, [], 'every row is back on image/');
  const rows = await query<{ path: string }>(env.databaseUrl, `select path from avatars where id = any($1::int[])`, [added.map((r) => r.id)]);
  t.ok(rows.every((r) => r.path.startsWith('image/')), 'the rows written after cutover included');
  t.same(await ledgerStates(env.databaseUrl), { reverted: KEYS });
});

t.test('finding 3: execute --delete-only frozen past its lease while revert takes its keys deletes nothing on waking', async (t) => {
  const KEYS = 20;
  const env = await plannedTestEnv(t, KEYS);
  t.equal((await runCli(['execute', '--keep-source', '--quiet'], { env: env.env })).code, 0);
  // The target checks (HEAD) take 2 s: the worker is frozen between its claim and its delete.
  const { cliEnv } = await proxyTestEnv(t, env, { latencyMs: 2_000, match: (r) => r.method === 'HEAD' });
  const observer = observe(t, env, true);
  const stale = spawnCli(['execute', '--delete-only', '--threads', '1', '--pipeline', '1', '--batch-size', String(KEYS), '--lease-seconds', '2', '--quiet'], {
    env: cliEnv,
    timeoutMs: 60_000,
  });
  const pid = stale.child.pid!;
  t.teardown(() => void stale.child.kill('SIGCONT'));
  const deadline = Date.now() + 20_000;
  let held = 0;
  while (held < KEYS && Date.now() < deadline) {
    const rows = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from bucket_migrate.migration_ledger where locked_by like $1`, [`%:${pid}:%`]);
    held = rows[0]?.n ?? 0;
    if (held < KEYS) await sleep(20);
  }
  t.equal(held, KEYS, 'the delete run holds every key');
  await sleep(300); // its HEADs are in flight
  process.kill(pid, 'SIGSTOP');
  await sleep(2_500); // past --lease-seconds
  // revert's own claim and rows-back statements (the revert command itself
  // waits while the frozen execute's run heartbeat is fresh: the two are
  // mutually exclusive through the runs table; a lease is the last line).
  const db = createDatabase({ url: env.databaseUrl, max: 2 });
  t.teardown(() => db.destroy());
  const reverter: LedgerContext = { db, schema: 'bucket_migrate', table: { name: 'avatars' }, idColumn: 'id', pathColumn: 'path', idCast: 'int4', me: 'reverter' };
  const taken = await claimRevert(reverter, 100, 60, 5);
  t.equal(taken.length, KEYS, 'revert takes every key once the frozen lease lapsed');
  await revertRows(reverter, taken.map((r) => ({ id: r.id, deleteTarget: false })));
  t.same(await ledgerStates(env.databaseUrl), { reverted: KEYS }, 'revert moved every key\'s rows back');
  process.kill(pid, 'SIGCONT');
  const woke = await stale.result;
  t.not(woke.code, null, `the woken run ends: ${woke.stderr}`);
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a deleted object (${observer.checks} checks)`);
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, KEYS, 'no source was deleted');
  t.same(await brokenRows(env), []);
});

t.test('finding 4: plan re-run during execute, with the application writing: no row is stranded', async (t) => {
  const KEYS = 120;
  const env = await plannedTestEnv(t, KEYS);
  t.equal((await runCli(['execute', '--keep-source', '--quiet'], { env: env.env })).code, 0);
  const observer = observe(t, env);
  const writer = startWriter(env.databaseUrl, KEYS, 'image/', 11);
  const run = spawnCli(['execute', '--delete-only', '--batch-size', '10', '--threads', '2', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  let plans = 0;
  let finished = false;
  void run.result.then(() => (finished = true));
  while (!finished) {
    const again = await runCli(['plan'], { env: env.env });
    t.equal(again.code, 0, again.stderr);
    plans += 1;
  }
  const result = await run.result;
  t.equal(result.code, 0, result.stderr);
  t.ok(plans >= 1, `${plans} plans ran during the delete phase`);
  await writer.stop();
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const last = await runCli(['execute', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(last.code, 0, last.stderr);
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a deleted object (${observer.checks} checks)`);
  t.same(await brokenRows(env), []);
  t.same(await query(env.databaseUrl, `select id from avatars where path like 'image/%'`), [], 'no row is stranded under image/');
});

t.test('a transaction that began before the fence and writes a legacy path while execute waits is recorded or redirected, never broken', async (t) => {
  const env = await plannedTestEnv(t, 10);
  t.equal((await runCli(['execute', '--keep-source', '--quiet'], { env: env.env })).code, 0);
  const repeatable = new pg.Client({ connectionString: env.databaseUrl, application_name: 'application-rr' });
  const committed = new pg.Client({ connectionString: env.databaseUrl, application_name: 'application-rc' });
  await repeatable.connect();
  await committed.connect();
  t.teardown(() => Promise.all([repeatable.end(), committed.end()]));
  // Both begin before the fence; the first takes its snapshot now.
  await repeatable.query('begin isolation level repeatable read');
  await repeatable.query('select count(*) from avatars');
  await committed.query('begin');
  await committed.query('select 1');

  const run = spawnCli(['execute', '--delete-only', '--lease-seconds', '30', '--quiet'], { env: env.env, timeoutMs: 60_000 });
  const deadline = Date.now() + 20_000;
  let fenced = 0;
  while (fenced < 10 && Date.now() < deadline) {
    fenced = (await ledgerStates(env.databaseUrl)).deleting ?? 0;
    if (fenced < 10) await sleep(20);
  }
  t.equal(fenced, 10, 'every key is fenced, and execute waits for the two open transactions');
  await sleep(300);
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/').then((k) => k.length), 10, 'nothing is deleted while they are open');
  // Written after the fence, committed after: one sees the old snapshot (the
  // key is not yet fenced for it), the other a new one.
  const [rr] = (await repeatable.query<{ id: number; path: string }>(`insert into avatars (path) values ('image/avatar-3.png') returning id, path`)).rows;
  const [rc] = (await committed.query<{ id: number; path: string }>(`insert into avatars (path) values ('image/avatar-4.png') returning id, path`)).rows;
  t.equal(rr!.path, 'image/avatar-3.png', 'the old snapshot sees the key before its fence: the row is recorded');
  t.equal(rc!.path, 'avatar/avatar-4.png', 'a new statement sees the fence: the row is redirected to the copy');
  await repeatable.query('commit');
  await committed.query('commit');
  const result = await run.result;
  t.equal(result.code, 0, result.stderr);
  const rows = await query<{ id: number; path: string }>(env.databaseUrl, 'select id, path from avatars where id = any($1::int[]) order by id', [[rr!.id, rc!.id]]);
  t.same(rows.map((r) => r.path), ['avatar/avatar-3.png', 'avatar/avatar-4.png'], 'both rows name the copies');
  t.same(await brokenRows(env), []);
  t.same(await ledgerStates(env.databaseUrl), { done: 10 });
});

t.test("rows naming a key as '/image/x', s3://bucket/image/x or an https URL keep its source", async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '6', '--quiet'], { env: env.env })).code, 0);
  await query(env.databaseUrl, `insert into avatars (path) values ('/image/avatar-1.png')`);
  const plan = await runCli(['plan'], { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  t.match(plan.stdout, /plan: 1 rows name a planned key in another spelling/);
  t.equal((await runCli(['execute', '--keep-source', '--quiet'], { env: env.env })).code, 0);
  // Written after the plan: recorded by the trigger.
  await query(env.databaseUrl, `insert into avatars (path) values ($1), ($2)`, [
    `s3://${env.sourceBucket}/image/avatar-2.png`,
    `https://${env.sourceBucket}.s3.us-east-1.amazonaws.com/image/avatar-5.png`,
  ]);
  const run = await runCli(['execute', '--delete-only'], { env: env.env });
  t.equal(run.code, 1, 'the refused deletes fail the run');
  t.match(run.stderr, /names the source as "\/image\/avatar-1\.png"; source kept/);
  t.match(run.stderr, new RegExp(`names the source as "s3://${env.sourceBucket}/image/avatar-2\\.png"; source kept`));
  t.same((await listKeys(env.s3client, env.sourceBucket, 'image/')).sort(), ['image/avatar-1.png', 'image/avatar-2.png', 'image/avatar-5.png']);
  t.same(await ledgerStates(env.databaseUrl), { done: 3, failed: 3 });
});

t.test('index guard: a role without TRIGGER but with a path index deletes, finding rows added since the plan by the index', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '12', '--quiet'], { env: env.env })).code, 0);
  await query(env.databaseUrl, `create index avatars_path on avatars (path)`);
  const restricted = await roleWithoutTrigger(t, env, 'bm_guardix');
  const plan = await runCli(['plan'], { env: restricted });
  t.equal(plan.code, 0, plan.stderr);
  t.match(plan.stderr, /^guard for the delete phase: index/m);
  t.equal((await runCli(['execute', '--keep-source', '--quiet'], { env: restricted })).code, 0);
  // Added after the plan, no trigger to record them: found by the index.
  await query(env.databaseUrl, `insert into avatars (path) values ('image/avatar-2.png'), ('image/avatar-2.png'), ('/image/avatar-7.png')`);
  const run = await runCli(['execute', '--delete-only'], { env: restricted });
  t.equal(run.code, 1, 'the key named in another spelling is refused');
  t.match(run.stderr, /^guard: index \(/m);
  t.match(run.stderr, /names the source as "\/image\/avatar-7\.png"; source kept/);
  t.same(await query(env.databaseUrl, `select id from avatars where path = 'image/avatar-2.png'`), [], 'the added rows were moved');
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), ['image/avatar-7.png'], 'only the source a row still spells is kept');
  t.same(await brokenRows(env), []);
  t.same(await ledgerStates(env.databaseUrl), { done: 11, failed: 1 });
});

t.test('a guard trigger dropped after the plan: execute refuses the delete phase until plan runs again', async (t) => {
  const env = await plannedTestEnv(t, 5);
  await query(env.databaseUrl, 'drop trigger bucket_migrate_guard on avatars');
  const refused = await runCli(['execute', '--quiet'], { env: env.env });
  t.equal(refused.code, 2);
  t.match(refused.stderr, /the guard trigger on avatars is missing: run bucket-migrate plan again \(it installs it\) before execute/);
  t.same(await ledgerStates(env.databaseUrl), { pending: 5 }, 'nothing was touched');
  const plan = await runCli(['plan'], { env: env.env });
  t.match(plan.stderr, /^guard for the delete phase: trigger/m, 'plan installs it again, before a new snapshot');
  const run = await runCli(['execute', '--quiet'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 5 });
});
