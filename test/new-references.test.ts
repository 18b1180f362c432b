/**
 * Rows the application adds with a legacy path after the plan (an old app
 * instance, a restore, a backfill). With an index on the path column, a
 * source is deleted only once no row names it: such rows are found and
 * moved first. Without one, the guard trigger that plan installs records it
 * (see test/guard.test.ts for the guard itself).
 */
import t, { type Test } from 'tap';
import { runCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { listKeys, objectExists, setupTestEnv, type TestEnv } from './helpers/services.js';

const KEYS = 40;

/** Seeds, plans and moves every key with its source kept: all in db_updated. */
async function staged(t: Test, indexed: boolean): Promise<TestEnv> {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', String(KEYS), '--quiet'], { env: env.env })).code, 0);
  if (indexed) await query(env.databaseUrl, 'create index avatars_path on avatars (path)');
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const kept = await runCli(['execute', '--keep-source', '--quiet'], { env: env.env });
  t.equal(kept.code, 0, kept.stderr);
  t.same(await ledgerStates(env.databaseUrl), { db_updated: KEYS }, 'every key moved, every source kept');
  t.notMatch(kept.stderr, /has no index/, 'no note when nothing is deleted');
  return env;
}

t.test('with an index on the path column, rows added since the plan are moved before their source is deleted', async (t) => {
  const env = await staged(t, true);
  const added = await query<{ id: number }>(
    env.databaseUrl,
    `insert into avatars (path) values ('image/avatar-3.png'), ('image/avatar-3.png'), ('image/avatar-7.png') returning id`,
  );
  const run = await runCli(['execute', '--delete-only', '--batch-size', '10'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.notMatch(run.stderr, /has no index/);
  t.match(run.stderr, /2 times a source was still named by rows added since the plan/);
  t.same(await ledgerStates(env.databaseUrl), { done: KEYS });

  const rows = await query<{ id: number; path: string }>(env.databaseUrl, 'select id, path from avatars order by id');
  t.same(rows.filter((r) => !r.path.startsWith('avatar/')), [], 'no row is left under image/');
  for (const { id } of added) {
    const row = rows.find((r) => r.id === id)!;
    t.ok(await objectExists(env.s3client, env.targetBucket, row.path), `added row ${id} names an existing object (${row.path})`);
  }
  const ledger = await query<{ row_ids: string[]; rows_updated: string[] }>(
    env.databaseUrl,
    `select row_ids, rows_updated from bucket_migrate.migration_ledger where src_key = 'image/avatar-3.png'`,
  );
  const addedIds = added.slice(0, 2).map((r) => String(r.id));
  t.ok(addedIds.every((id) => ledger[0]!.row_ids.includes(id)), 'the added rows joined the key\'s referencing ids');
  t.same(ledger[0]!.rows_updated.filter((id) => addedIds.includes(id)).sort(), addedIds.sort(), 'and the ledger records moving them');
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), [], 'every source is deleted in the end');
});

t.test('without an index, the guard trigger (installed by plan) finds the row added since the plan, and validate passes', async (t) => {
  const env = await staged(t, false);
  await query(env.databaseUrl, `insert into avatars (path) values ('image/avatar-5.png')`);
  const run = await runCli(['execute', '--delete-only', '--quiet'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.match(run.stderr, /^guard: trigger \(/m, 'execute names the guard in one line at the start');
  const rows = await query<{ path: string }>(env.databaseUrl, `select path from avatars where path like 'image/%'`);
  t.same(rows, [], 'the added row was moved onto the copy');
  const validate = await runCli(['validate'], { env: env.env });
  t.equal(validate.code, 0, validate.stdout);
});
