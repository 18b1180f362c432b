/**
 * The database side of performance, on real Postgres:
 *
 * - On a 1,000,000-row table (and a 1,000,000-key ledger from `plan`), every
 *   per-batch statement finds its rows through an index: the commit updates
 *   the table by its primary key, and nothing scans a whole table. Checked
 *   with EXPLAIN of the very SQL and parameters the state machine sends.
 * - The statements per batch are a constant: whole `execute` runs at two
 *   batch sizes are counted by the server (`pg_stat_database.xact_commit`:
 *   every statement of the tool commits on its own), and the difference
 *   divided by the difference in batches is the per-batch count.
 * - `--dest-check list` replaces the HEAD per key with one listing per batch
 *   and still never overwrites a different object at the destination.
 */
import type { CompiledQuery } from 'kysely';
import t from 'tap';
import { claimBatch, commitRows, fenceDeletes, findNamingRows, markCopied, markDone, type LedgerContext } from '../src/ledger/state-machine.js';
import { runCli } from './helpers/cli.js';
import { ledgerStates } from './helpers/db.js';
import { FIRST_CLAIM } from '../src/execute/worker-loop.js';
import { getBytes, listKeys, putObject, setupTestEnv } from './helpers/services.js';
import { startFaultProxy } from './support/fault-proxy.js';
import { capturingDb, describeNode, nodesOf, type PlanNode } from './support/query-plans.js';
import { withPgClient } from '../scripts/lib/pg-once.js';

const withClient = withPgClient;


t.test('on a 1,000,000-row table every per-batch statement uses an index; the commit uses the primary key', async (t) => {
  const ROWS = 1_000_000;
  // plan checks that both buckets exist before it touches anything.
  const env = await setupTestEnv(t);
  const filled = Date.now();
  await withClient(env.databaseUrl, async (c) => {
    await c.query('create table avatars (id serial primary key, path varchar)');
    await c.query(`insert into avatars (path) select 'image/avatar-' || g || '.png' from generate_series(1, $1::int) g`, [ROWS]);
    await c.query('analyze avatars');
  });
  t.comment(`filled ${ROWS} rows in ${((Date.now() - filled) / 1000).toFixed(1)} s`);
  const planned = Date.now();
  const plan = await runCli(['plan'], { env: env.env, timeoutMs: 120_000 });
  t.equal(plan.code, 0, `plan: ${plan.stderr}`);
  t.comment(`plan of ${ROWS} rows: ${((Date.now() - planned) / 1000).toFixed(1)} s`);

  // The state machine's statements, captured as sent.
  const { db, captured } = capturingDb(t, env.databaseUrl);
  const ctx: LedgerContext = {
    db,
    schema: 'bucket_migrate',
    table: { name: 'avatars' },
    idColumn: 'id',
    pathColumn: 'path',
    idCast: 'int4',
    me: 'performance-test',
    locations: { source: { bucket: 'legacy-s3', prefix: 'image/' }, target: { bucket: 'production-s3', prefix: 'avatar/' } },
  };
  const statements: Record<string, CompiledQuery> = {};
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const before = captured.length;
    const started = performance.now();
    const result = await fn();
    t.comment(`${name}: ${(performance.now() - started).toFixed(1)} ms`);
    statements[name] = captured[before]!;
    return result;
  };
  const rows = await timed('claim', () => claimBatch(ctx, 500, 600));
  t.equal(rows.length, 500, 'claimed a batch of 500');
  const copied = await timed('mark copied', () => markCopied(ctx, rows.map((r) => ({ id: r.id, dstEtag: '"x"' }))));
  t.equal(copied.length, 500);
  const committed = await timed('commit table + ledger', () => commitRows(ctx, copied));
  t.equal(committed.filter((c) => c.state === 'db_updated').length, 500, 'every row moved');
  const fenced = await timed('fence', () => fenceDeletes(ctx, committed.map((c) => c.id), 1));
  t.equal(fenced.length, 500);
  const named = await timed('look for rows naming the sources', () => findNamingRows(ctx, fenced, 'deleting', 'source', false));
  t.same(named, [], 'no row names a source any more');
  const done = await timed('mark done', () => markDone(ctx, fenced));
  t.equal(done.length, 500);
  const moved = await withClient(env.databaseUrl, (c) =>
    c.query<{ n: number }>(`select count(*)::int as n from avatars where path like 'avatar/%'`),
  );
  t.equal(moved.rows[0]?.n, 500, 'exactly the batch rows now point at the new prefix');

  for (const [name, statement] of Object.entries(statements)) {
    const explained = await withClient(env.databaseUrl, (c) =>
      c.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`explain (format json) ${statement.sql}`, [...statement.parameters]),
    );
    const nodes = nodesOf(explained.rows[0]!['QUERY PLAN'][0]!.Plan);
    const scans = nodes.filter((n) => n['Relation Name']).map(describeNode);
    t.comment(`${name}: ${scans.join('; ')}`);
    // late_references and late_paths hold only rows written since the plan
    // (none here): a scan of an empty side table is the right plan.
    t.same(
      nodes.filter((n) => n['Node Type'] === 'Seq Scan' && !/^late_(references|paths)$/.test(n['Relation Name'] ?? '')).map(describeNode),
      [],
      `${name}: no Seq Scan`,
    );
    if (name === 'commit table + ledger') {
      const onTable = nodes.filter((n) => n['Relation Name'] === 'avatars' && n['Node Type'] !== 'ModifyTable');
      t.ok(onTable.length > 0, 'the commit reads the table');
      t.ok(
        onTable.every((n) => /^Index (Only )?Scan$/.test(n['Node Type']) && n['Index Name'] === 'avatars_pkey'),
        `the table is reached only through its primary key: ${onTable.map(describeNode).join('; ')}`,
      );
    }
  }
  // The check for rows added since the plan runs only with an index on the
  // path column, and must use it.
  await withClient(env.databaseUrl, (c) => c.query('create index avatars_path on avatars (path)'));
  const again = await claimBatch(ctx, 100, 600);
  await commitRows(ctx, await markCopied(ctx, again.map((r) => ({ id: r.id, dstEtag: '"x"' }))));
  const refenced = await fenceDeletes(ctx, again.map((r) => r.id), 1);
  const requeued = await timed('look for rows added since the plan', () => findNamingRows(ctx, refenced, 'deleting', 'source', true));
  t.same(requeued, [], 'no row is found when no row was added');

  const lookup = await withClient(env.databaseUrl, (c) =>
    c.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`explain (format json) ${statements['look for rows added since the plan']!.sql}`, [
      ...statements['look for rows added since the plan']!.parameters,
    ]),
  );
  const lookupNodes = nodesOf(lookup.rows[0]!['QUERY PLAN'][0]!.Plan);
  t.comment(`look for rows added since the plan: ${lookupNodes.filter((n) => n['Relation Name']).map(describeNode).join('; ')}`);
  t.same(
    lookupNodes.filter((n) => n['Node Type'] === 'Seq Scan' && !/^late_(references|paths)$/.test(n['Relation Name'] ?? '')).map(describeNode),
    [],
    'the look for added rows scans nothing whole (but the empty side tables)',
  );
  t.ok(
    lookupNodes.some((n) => n['Relation Name'] === 'avatars' && n['Index Name'] === 'avatars_path'),
    'it finds rows by path through the index',
  );

  // Linear in the batch: no node of the commit's plan handles more rows,
  // over all its loops, than a small multiple of the batch. A plan that
  // re-aggregates the moved rows for every key (as an earlier version of
  // this statement did) handles the batch squared.
  const BIG = 2_000;
  const big = await claimBatch(ctx, BIG, 600);
  t.equal(big.length, BIG, `claimed a batch of ${BIG}`);
  const bigCopied = await markCopied(ctx, big.map((r) => ({ id: r.id, dstEtag: '"x"' })));
  const commit = statements['commit table + ledger']!;
  const parameters = commit.parameters.map((p) => (Array.isArray(p) ? bigCopied : p));
  const analyzed = await withClient(env.databaseUrl, async (c) => {
    await c.query('begin');
    try {
      return await c.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`explain (analyze, format json) ${commit.sql}`, parameters);
    } finally {
      await c.query('rollback');
    }
  });
  const handled = nodesOf(analyzed.rows[0]!['QUERY PLAN'][0]!.Plan).map((n) => ({
    node: describeNode(n),
    rows: (n['Actual Rows'] ?? 0) * (n['Actual Loops'] ?? 1),
  }));
  const top = handled.reduce((a, b) => (b.rows > a.rows ? b : a));
  t.comment(`commit of ${BIG} keys: the busiest node is ${top.node}, ${top.rows} rows over all its loops`);
  t.ok(handled.every((h) => h.rows <= 4 * BIG), `every node of the commit handles at most ${4 * BIG} rows for ${BIG} keys (busiest: ${top.node}, ${top.rows})`);
});

t.test('statements per batch are a constant, whatever the batch size', async (t) => {
  const KEYS = 600;
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', String(KEYS), '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(seeded.code, 0, `seed: ${seeded.stderr}`);

  // Other transactions in this database would be counted too: no autovacuum.
  const quiet = (tables: string[]) =>
    withClient(env.databaseUrl, async (c) => {
      for (const table of tables) await c.query(`alter table ${table} set (autovacuum_enabled = false, toast.autovacuum_enabled = false)`);
    });
  const committedTransactions = () =>
    withClient(env.databaseUrl, async (c) => {
      // Exited backends have flushed their counts; make sure ours have too.
      await c.query('select pg_stat_force_next_flush()').catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const result = await c.query<{ n: string }>(
        'select pg_stat_clear_snapshot(), xact_commit::text as n from pg_stat_database where datname = current_database()',
      );
      return Number(result.rows[0]!.n);
    });

  /** Plans into `schema` and counts the committed transactions of one execute. */
  const countedRun = async (schema: string, source: { bucket: string; prefix: string }, target: { bucket: string; prefix: string }, batchSize: number) => {
    const runEnv = {
      ...env.env,
      LEDGER_SCHEMA: schema,
      SOURCE_BUCKET: source.bucket,
      SOURCE_PREFIX: source.prefix,
      TARGET_BUCKET: target.bucket,
      TARGET_PREFIX: target.prefix,
    };
    const planned = await runCli(['plan', '--list'], { env: runEnv });
    t.equal(planned.code, 0, `plan: ${planned.stderr}`);
    await quiet(['avatars', `${schema}.migration_ledger`]);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const before = await committedTransactions();
    // One thread, one batch in progress: every statement is in the count.
    const run = await runCli(['execute', '--threads', '1', '--pipeline', '1', '--batch-size', String(batchSize), '--quiet'], {
      env: runEnv,
      timeoutMs: 120_000,
    });
    t.equal(run.code, 0, `execute: ${run.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const after = await committedTransactions();
    const batches = claimSizes(KEYS, batchSize).length;
    t.comment(`--batch-size ${batchSize}: ${batches} batches, ${after - before} statements`);
    return { statements: after - before, batches };
  };

  const image = { bucket: env.sourceBucket, prefix: 'image/' };
  const avatar = { bucket: env.targetBucket, prefix: 'avatar/' };
  const small = await countedRun('ledger_small', image, avatar, 25);
  t.equal((await listKeys(env.s3client, env.targetBucket, 'avatar/')).length, KEYS, 'first run moved every key');
  // And back: the second run's source is the first run's target.
  const large = await countedRun('ledger_large', avatar, image, 300);
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, KEYS, 'second run moved every key back');

  const perBatch = (small.statements - large.statements) / (small.batches - large.batches);
  const fixed = large.statements - perBatch * large.batches;
  t.comment(
    `per batch: ${perBatch.toFixed(2)} statements (claim, mark copied, commit table + ledger, fence, wait for older transactions, ` +
      `look for rows naming the sources, confirm the leases, mark done); per run: ${fixed.toFixed(1)}`,
  );
  // The delete guard's four (fence, wait, check, confirm) plus the four of
  // the move; a poll of the wait when another transaction was open.
  t.ok(perBatch >= 7.5 && perBatch <= 9, `8 statements per batch of any size (measured ${perBatch.toFixed(2)})`);
  t.ok(fixed > 0 && fixed < 60, `a small constant per run for checks, start and summary (measured ${fixed.toFixed(1)})`);
  t.ok(small.statements / KEYS < 0.45, `even at 25 keys a batch, ${(small.statements / KEYS).toFixed(2)} statements per key`);
});

t.test('--dest-check list: one listing per batch instead of a HEAD per key, and an existing different object is never overwritten', async (t) => {
  const KEYS = 300;
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', String(KEYS), '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(seeded.code, 0, `seed: ${seeded.stderr}`);
  const planned = await runCli(['plan', '--list'], { env: env.env });
  t.equal(planned.code, 0, `plan: ${planned.stderr}`);
  // Already at the target: a different object (a conflict) and the same bytes (a resume).
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-5.png', 'not the same avatar');
  const same = await getBytes(env.s3client, env.sourceBucket, 'image/avatar-7.png');
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-7.png', same!, { ContentType: 'image/png' });

  const methods: Record<string, number> = {};
  const proxy = await startFaultProxy(env.s3.endpoint, {
    match: (req) => {
      // The start-up If-None-Match probe's scratch objects (src/copy/probe-conditional.ts) are not per-key work.
      if (req.url.includes('.bucket-migrate-probe')) return false;
      const kind = req.method === 'GET' && /[?&]list-type=2/.test(req.url) ? 'LIST' : req.method;
      methods[kind] = (methods[kind] ?? 0) + 1;
      return false;
    },
  });
  t.teardown(() => proxy.close());
  const run = await runCli(['execute', '--dest-check', 'list', '--threads', '1', '--batch-size', '100', '--quiet'], {
    env: { ...env.env, S3_ENDPOINT: proxy.endpoint },
    timeoutMs: 120_000,
  });
  t.equal(run.code, 1, `exit 1: one key is in conflict\n${run.stderr}`);
  t.comment(`requests by kind: ${JSON.stringify(methods)}`);
  const states = await withClient(env.databaseUrl, (c) =>
    c.query<{ state: string; n: number }>('select state, count(*)::int as n from bucket_migrate.migration_ledger group by state order by state'),
  );
  t.same(Object.fromEntries(states.rows.map((r) => [r.state, r.n])), { conflict: 1, done: KEYS - 1 }, 'one conflict, the rest done');
  t.equal((await getBytes(env.s3client, env.targetBucket, 'avatar/avatar-5.png'))?.toString(), 'not the same avatar', 'the different object is untouched');
  t.ok(await getBytes(env.s3client, env.sourceBucket, 'image/avatar-5.png'), 'and its source is kept');
  t.equal(methods.PUT, KEYS - 2, 'one CopyObject per key that was not already there');
  // A clone (--copy-mode clone, the default) HEADs nothing: the destination is HEADed only for
  // the two keys found present, and their sources to judge them.
  t.ok((methods.HEAD ?? 0) <= 4, `destination HEADs only for the keys found present (${methods.HEAD ?? 0})`);
  // The slow start (claims of 25, 50, then --batch-size) adds two batches.
  t.ok((methods.LIST ?? 0) <= 4 + Math.ceil(KEYS / 100), `a listing per batch (${methods.LIST ?? 0}, preflight included)`);
});

t.test('plan then execute, the default commands: at most 1.05 S3 requests per key, counted on a real run', async (t) => {
  const KEYS = 1000;
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', String(KEYS), '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(seeded.code, 0, `seed: ${seeded.stderr}`);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0, 'plan, without --list');
  const methods: Record<string, number> = {};
  const proxy = await startFaultProxy(env.s3.endpoint, {
    match: (req) => {
      const kind = req.method === 'GET' && /[?&]list-type=2/.test(req.url) ? 'LIST' : req.method;
      methods[kind] = (methods[kind] ?? 0) + 1;
      return false;
    },
  });
  t.teardown(() => proxy.close());
  const run = await runCli(['execute', '--threads', '2'], { env: { ...env.env, S3_ENDPOINT: proxy.endpoint }, timeoutMs: 300_000 });
  t.equal(run.code, 0, run.stderr);
  t.comment(`requests by kind, start-up checks included: ${JSON.stringify(methods)}`);
  t.same(await ledgerStates(env.databaseUrl), { done: KEYS });
  const perKey = Number(/S3 requests \((\d+\.\d+) per key\)/.exec(run.stderr)?.[1]);
  t.ok(perKey <= 1.05, `execute's own count: ${perKey} requests per key`);
  t.equal(methods.HEAD ?? 0, 0, 'no HEAD of any source or destination');
  t.ok(methods.PUT! >= KEYS && methods.PUT! <= KEYS + 4, `one CopyObject per key (${methods.PUT}; the start-up If-None-Match probe adds a few)`);
});

/** The claims one worker makes for `keys` keys: the slow start (src/execute/worker-loop.ts), then `batchSize` each. */
function claimSizes(keys: number, batchSize: number): number[] {
  const sizes: number[] = [];
  let size = Math.min(batchSize, FIRST_CLAIM);
  for (let left = keys; left > 0; left -= sizes.at(-1)!) {
    sizes.push(Math.min(size, left));
    size = Math.min(batchSize, size * 2);
  }
  return sizes;
}
