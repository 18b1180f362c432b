/**
 * Staged cutover at scale: on a 1,000,000-key ledger with 900,000 keys
 * parked in `db_updated` (a `--keep-source` run most of the way through),
 * the claim of the remaining keys and the "anything left?" probe read
 * O(batch) rows, not O(parked). Checked with EXPLAIN (ANALYZE, BUFFERS) of
 * the very SQL the claim and the worker loop send: no node handles, nor
 * filters out, more than a small multiple of the batch, and the buffers
 * touched are bounded by the batch. Before migration 0008 the claim's
 * index scan filtered out all 900,000 parked rows.
 *
 * On the same ledger, `report`'s figures agree with count(*) and none of its
 * statements reads the ledger but through the index of the keys it lists:
 * its cost does not grow with the ledger (migration 0009-ledger-counts).
 */
import type { CompiledQuery } from 'kysely';
import pg from 'pg';
import t from 'tap';
import { hasLiveRows } from '../src/execute/worker-loop.js';
import { ALL_STATES, claimBatch, type LedgerContext } from '../src/ledger/state-machine.js';
import { collectReport } from '../src/report/collect-report.js';
import { runCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';
import { capturingDb, describeNode, nodesOf, type PlanNode } from './support/query-plans.js';

const describe = describeNode;

t.test('a --keep-source claim and the live-rows probe stay O(batch) with 900,000 of 1,000,000 keys parked', async (t) => {
  const ROWS = 1_000_000;
  const PARKED = 900_000;
  const BATCH = 500;
  // plan checks that both buckets exist before it touches anything.
  const env = await setupTestEnv(t);
  const admin = new pg.Client({ connectionString: env.databaseUrl });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query('create table avatars (id serial primary key, path varchar)');
  await admin.query(`insert into avatars (path) select 'image/avatar-' || g || '.png' from generate_series(1, $1::int) g`, [ROWS]);
  await admin.query('analyze avatars');
  const plan = await runCli(['plan'], { env: env.env, timeoutMs: 300_000 });
  t.equal(plan.code, 0, `plan: ${plan.stderr}`);
  // What a --keep-source run leaves behind: the first 900,000 keys moved and parked.
  await admin.query(`update bucket_migrate.migration_ledger set state = 'db_updated', db_updated_at = now() where id <= $1`, [PARKED]);
  // VACUUM without ANALYZE: the dead index entries the update left are
  // gone (as autovacuum removes them during a run), but the column
  // statistics still say every key is pending, as they do between
  // autovacuum's ANALYZEs. (Dead entries not yet vacuumed cost every index
  // scan until then: see docs/SCALE.md, vacuum.)
  await admin.query('vacuum bucket_migrate.migration_ledger');

  const { db, captured } = capturingDb(t, env.databaseUrl);
  const ctx: LedgerContext = { db, schema: 'bucket_migrate', table: { name: 'avatars' }, idColumn: 'id', pathColumn: 'path', idCast: 'int4', me: 'claim-scale-test' };

  const explainAnalyzed = async (statement: CompiledQuery) => {
    await admin.query('begin');
    try {
      const result = await admin.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(
        `explain (analyze, buffers, format json) ${statement.sql}`,
        [...statement.parameters],
      );
      return nodesOf(result.rows[0]!['QUERY PLAN'][0]!.Plan);
    } finally {
      await admin.query('rollback');
    }
  };
  const check = (name: string, nodes: PlanNode[], bound: number, bufferBound: number) => {
    const handled = Math.max(...nodes.map((n) => (n['Actual Rows'] ?? 0) * (n['Actual Loops'] ?? 1)));
    const filtered = nodes.reduce((sum, n) => sum + (n['Rows Removed by Filter'] ?? 0) * (n['Actual Loops'] ?? 1), 0);
    const top = nodes[0]!;
    const buffers = (top['Shared Hit Blocks'] ?? 0) + (top['Shared Read Blocks'] ?? 0);
    t.comment(`${name}: ${nodes.filter((n) => n['Relation Name']).map(describe).join('; ')}; busiest node ${handled} rows, ${filtered} removed by filter, ${buffers} buffers`);
    t.same(nodes.filter((n) => n['Node Type'] === 'Seq Scan').map(describe), [], `${name}: no Seq Scan`);
    const ledgerScans = nodes.filter((n) => n['Relation Name'] === 'migration_ledger' && n['Node Type'] !== 'ModifyTable' && n['Index Name'] !== 'migration_ledger_pkey');
    t.ok(ledgerScans.length > 0 && ledgerScans.every((n) => n['Index Name']?.startsWith('migration_ledger_live_')), `${name}: rows found through the per-state indexes`);
    t.ok(handled <= bound, `${name}: no node handles more than ${bound} rows (${handled})`);
    t.ok(filtered <= bound, `${name}: at most ${bound} rows removed by filters (${filtered})`);
    t.ok(buffers <= bufferBound, `${name}: at most ${bufferBound} buffers touched (${buffers})`);
  };

  // Stale statistics first: the claims must still go by each state's index.
  const staleClaim = await claimBatch(ctx, BATCH, 600, { states: ['pending', 'copied'] });
  t.equal(staleClaim.length, BATCH, 'claimed a full batch with stale statistics');
  check('keep-source claim, stale statistics', await explainAnalyzed(captured.at(-1)!), 4 * BATCH, 30 * BATCH);
  captured.length = 0;
  await claimBatch(ctx, BATCH, 600);
  check('full claim, stale statistics', await explainAnalyzed(captured.at(-1)!), 4 * BATCH, 30 * BATCH);
  await admin.query('analyze bucket_migrate.migration_ledger');

  // The claim of a --keep-source run: pending and copied only.
  const claimed = await claimBatch(ctx, BATCH, 600, { states: ['pending', 'copied'] });
  t.equal(claimed.length, BATCH, 'claimed a full batch');
  t.ok(claimed.every((r) => r.state === 'pending' && r.id > PARKED), 'only pending keys, none of the parked ones');
  const claim = captured.at(-1)!;
  // A second batch now walks past the first one's leased rows too: still O(batch).
  check('keep-source claim', await explainAnalyzed(claim), 4 * BATCH, 30 * BATCH);

  // The probe when a claim came back empty.
  captured.length = 0;
  t.equal(await hasLiveRows(ctx, ['pending', 'copied']), true, 'pending keys are live');
  check('live-rows probe (pending, copied)', await explainAnalyzed(captured.at(-1)!), 10, 50);
  captured.length = 0;
  t.equal(await hasLiveRows(ctx, ['copied']), false, 'no copied key');
  check('live-rows probe (copied only, none left)', await explainAnalyzed(captured.at(-1)!), 10, 50);

  // And --delete-only, which takes the parked keys, past no pending one.
  captured.length = 0;
  const parked = await claimBatch(ctx, BATCH, 600, { states: ['db_updated'] });
  t.equal(parked.length, BATCH);
  t.ok(parked.every((r) => r.state === 'db_updated'), 'delete-only claims parked keys');
  check('delete-only claim', await explainAnalyzed(captured.at(-1)!), 4 * BATCH, 30 * BATCH);

  // A full claim takes the furthest-along keys first.
  const full = await claimBatch(ctx, 10, 600);
  t.ok(full.every((r) => r.state === 'db_updated'), 'a full claim takes db_updated keys before pending ones');
  // Earlier claims hold leases on 1,510 keys (and the stale-statistics full
  // claim took db_updated ones): the rows the report counts as leased below.

  // report on the same ledger: its figures agree with count(*), and none of
  // its statements reads the ledger beyond the few keys it lists.
  await admin.query(`update bucket_migrate.migration_ledger set state = 'failed', last_error = 'copy failed: ETag "' || id || '" changed' where id between 950001 and 950030`);
  await admin.query(`update bucket_migrate.migration_ledger set state = 'missing', last_error = 'not found in the source listing' where id between 960001 and 960005`);
  captured.length = 0;
  const report = await collectReport(db, 'bucket_migrate');
  const truth = await admin.query<{ state: string; n: number }>('select state, count(*)::int as n from bucket_migrate.migration_ledger group by state');
  const expected = Object.fromEntries(ALL_STATES.map((s) => [s, 0])) as Record<string, number>;
  for (const row of truth.rows) expected[row.state] = row.n;
  t.same(report.states, expected, 'report states = count(*) per state');
  t.equal(report.planned, ROWS);
  const attempts = await admin.query<{ attempts: number; n: number }>('select attempts, count(*)::int as n from bucket_migrate.migration_ledger group by 1 order by 1');
  t.same(report.attempts, attempts.rows.map((r) => ({ attempts: r.attempts, keys: r.n })), 'attempts = count(*) per attempts');
  const leased = await admin.query<{ owner: string; n: number }>(
    `select locked_by as owner, count(*)::int as n from bucket_migrate.migration_ledger where locked_by is not null and state in ('pending', 'copied', 'db_updated') group by 1 order by 1`,
  );
  t.same(
    report.leases.owners.map((o) => ({ owner: o.owner, n: o.keys })).sort((a, b) => a.owner.localeCompare(b.owner)),
    leased.rows,
    'lease owners = count(*) per owner',
  );
  t.same(report.errors.map((e) => [e.error, e.keys, e.states]), [
    ['copy failed: ETag "…" changed', 30, { failed: 30 }],
    ['not found in the source listing', 5, { missing: 5 }],
  ]);
  t.equal(report.exceptions.failed.keys.length, 20, 'lists the first failed keys');
  t.equal(report.exceptions.failed.keys[0]!.id, 950001);
  const reportStatements = [...captured];
  t.ok(reportStatements.length > 3);
  let ledgerBuffers = 0;
  for (const statement of reportStatements) {
    const nodes = await explainAnalyzed(statement);
    const onLedger = nodes.filter((n) => n['Relation Name'] === 'migration_ledger');
    t.ok(
      onLedger.every((n) => /^Index (Only )?Scan$/.test(n['Node Type']) && n['Index Name'] === 'migration_ledger_exceptions'),
      `report reads the ledger only through the exceptions index: ${onLedger.map(describe).join('; ') || 'not at all'}`,
    );
    ledgerBuffers += onLedger.reduce((sum, n) => sum + (n['Shared Hit Blocks'] ?? 0) + (n['Shared Read Blocks'] ?? 0), 0);
    const handled = Math.max(...nodes.map((n) => (n['Actual Rows'] ?? 0) * (n['Actual Loops'] ?? 1)));
    t.ok(handled <= 1_000, `no node of a report statement handles more than 1,000 rows (${handled}): ${statement.sql.slice(0, 80).replace(/\s+/g, ' ')}`);
  }
  t.ok(ledgerBuffers <= 200, `report touched ${ledgerBuffers} ledger buffers in all`);
});
