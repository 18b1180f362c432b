/**
 * Every query in docs/AUDIT.md runs here against a migrated fixture, and its
 * answer is checked, so the document cannot rot. A query added to the
 * document without an expectation here fails the test, and so does an
 * expectation whose query has left the document.
 *
 * Queries take psql variables (`:'name'`). They are substituted the way psql
 * does it (a quoted literal) and run through pg; when a `psql` binary is on
 * the PATH, each is also run through psql itself, exactly as documented.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import t, { type Test } from 'tap';
import { runCli } from './helpers/cli.js';
import { putObject, setupTestEnv } from './helpers/services.js';

const DOC = fileURLToPath(new URL('../../docs/AUDIT.md', import.meta.url));

/** The documented queries, by the name in their `<!-- audit-query: name -->` marker. */
function documentedQueries(): Map<string, string> {
  const text = readFileSync(DOC, 'utf8');
  const queries = new Map<string, string>();
  const marker = /<!-- audit-query: ([a-z0-9-]+) -->\s*```sql\n([\s\S]*?)```/g;
  for (const match of text.matchAll(marker)) queries.set(match[1]!, match[2]!);
  // Every sql block must carry a marker, or it would escape the test.
  const blocks = [...text.matchAll(/```sql\n/g)].length;
  if (blocks !== queries.size) throw new Error(`docs/AUDIT.md has ${blocks} sql blocks but ${queries.size} audit-query markers`);
  return queries;
}

/** psql's `:'name'` interpolation: the value as a quoted literal. */
function interpolate(query: string, vars: Record<string, string>): string {
  return query.replace(/(?<!:):'([a-z_]+)'/g, (_, name: string) => {
    const value = vars[name];
    if (value === undefined) throw new Error(`query uses :'${name}', which the test does not set`);
    return `'${value.replace(/'/g, "''")}'`;
  });
}

const hasPsql = spawnSync('psql', ['--version'], { encoding: 'utf8' }).status === 0;

type Row = Record<string, unknown>;

t.test('every query in docs/AUDIT.md answers its question', async (t) => {
  const env = await setupTestEnv(t);
  const cli = async (args: string[]) => {
    const run = await runCli(args, { env: env.env, timeoutMs: 120_000 });
    return run.code;
  };
  t.equal(await cli(['seed', '--count', '20', '--awkward', '--quiet']), 0, 'seed');
  const client = new pg.Client({ connectionString: env.databaseUrl });
  await client.connect();
  t.teardown(() => client.end());
  // A row without an object (missing), and an occupied destination (conflict).
  await client.query("insert into avatars (path) values ('image/ghost.png')");
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-9.png', 'someone else was here');
  t.equal(await cli(['plan', '--list']), 0, 'plan --list');
  t.equal(await cli(['execute', '--threads', '2', '--quiet']), 1, 'execute: exit 1, one key is in conflict');

  const key = 'image/avatar-3.png';
  const row = (await client.query<{ id: number; path: string }>("select id, path from avatars where path = 'avatar/avatar-3.png'")).rows[0]!;
  const window = (await client.query<{ from: Date; to: Date }>(
    "select min(started_at) - interval '1 minute' as from, now() + interval '1 minute' as to from bucket_migrate.runs",
  )).rows[0]!;
  const vars = { key, row_id: String(row.id), from: window.from.toISOString(), to: window.to.toISOString() };
  const doneKeys = 31; // 20 + 12 awkward keys, less the conflict; the ghost is missing
  const migratedRows = Number((await client.query("select count(*) as n from avatars where path like 'avatar/%'")).rows[0].n);

  const run = async (t: Test, name: string, query: string, overrides: Record<string, string> = {}): Promise<Row[]> => {
    const values = { ...vars, ...overrides };
    const rows = (await client.query(interpolate(query, values))).rows as Row[];
    if (hasPsql) {
      const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At', '-d', env.databaseUrl];
      for (const [k, v] of Object.entries(values)) args.push('-v', `${k}=${v}`);
      const psql = spawnSync('psql', [...args, '-f', '-'], { input: query, encoding: 'utf8' });
      t.equal(psql.status, 0, `${name} runs in psql as documented`, { stderr: psql.stderr });
      t.equal(psql.stdout.split('\n').filter(Boolean).length >= rows.length, true, `${name}: psql printed the rows`);
    }
    return rows;
  };

  // One expectation per documented query: what it must answer on this fixture.
  const expectations: Record<string, (t: Test, query: string) => Promise<void>> = {
    progress: async (t, q) => {
      const rows = await run(t, 'progress', q);
      t.same(rows.map((r) => r.state), ['pending', 'copied', 'db_updated', 'deleting', 'reverting', 'done', 'failed', 'conflict', 'missing', 'superseded', 'archived', 'reverted']);
      const keys = Object.fromEntries(rows.map((r) => [r.state, Number(r.keys)]));
      t.match(keys, { pending: 0, done: doneKeys, conflict: 1, missing: 1 });
      t.equal(rows.reduce((n, r) => n + Number(r.percent), 0).toFixed(0), '100', 'percents add up to 100');
    },
    'key-history': async (t, q) => {
      const rows = await run(t, 'key-history', q);
      t.same(rows.map((r) => r.event), ['planned', 'copied', 'db_updated', 'done', 'last_change'], 'every step, in order');
      t.match(rows[0], { current_state: 'done', src_key: key, dst_key: 'avatar/avatar-3.png' });
      const times = rows.slice(0, 4).map((r) => (r.at as Date).getTime());
      t.same([...times].sort((a, b) => a - b), times, 'the steps happened in order');
      const byNewKey = await run(t, 'key-history', q, { key: 'avatar/avatar-3.png' });
      t.same(byNewKey, rows, 'the new key finds the same history');
    },
    'key-detail': async (t, q) => {
      const rows = await run(t, 'key-detail', q);
      t.equal(rows.length, 1);
      t.match(rows[0], { src_key: key, state: 'done', row_ids: [String(row.id)], rows_updated: [String(row.id)], rows_skipped: [] });
      const conflict = await run(t, 'key-detail', q, { key: 'avatar/avatar-9.png' });
      t.match(conflict[0], { state: 'conflict', last_error: /destination exists with different content/ });
    },
    'targets-made': async (t, q) => {
      const rows = await run(t, 'targets-made', q);
      const done = Number((await client.query("select count(*) from bucket_migrate.migration_ledger where state = 'done'")).rows[0].count);
      t.ok(done > 0);
      t.same(rows, [{ state: 'done', copy_made: true, keys: done }], 'every moved key\'s target was made by the migration: revert may delete each');
    },
    'row-history': async (t, q) => {
      const rows = await run(t, 'row-history', q);
      t.equal(rows.length, 1);
      t.match(rows[0], { row_id: String(row.id), old_path: key, new_path: row.path, key_state: 'done', row_outcome: 'updated' });
      t.ok(rows[0]!.changed_at instanceof Date);
      const ghost = (await client.query("select id from avatars where path = 'image/ghost.png'")).rows[0].id as number;
      t.match(await run(t, 'row-history', q, { row_id: String(ghost) }), [{ key_state: 'missing', row_outcome: 'not yet', last_error: /not found/ }]);
    },
    'row-by-current-path': async (t, q) => {
      const rows = await run(t, 'row-by-current-path', q);
      t.match(rows, [{ id: row.id, current_path: row.path, old_path: key, key_state: 'done' }]);
    },
    'rows-changed-in-window': async (t, q) => {
      const rows = await run(t, 'rows-changed-in-window', q);
      t.equal(rows.length, migratedRows, 'every rewritten row is in the window of the run');
      t.ok(rows.some((r) => r.row_id === String(row.id) && r.old_path === key && r.new_path === row.path));
      const before = await run(t, 'rows-changed-in-window', q, { from: '2000-01-01T00:00:00Z', to: '2000-01-02T00:00:00Z' });
      t.same(before, [], 'nothing changed in a window before the run');
    },
    failures: async (t, q) => {
      const rows = await run(t, 'failures', q);
      t.match(rows, [
        { state: 'conflict', src_key: 'image/avatar-9.png', last_error: /destination exists/ },
        { state: 'missing', src_key: 'image/ghost.png', last_error: 'not found in the source listing' },
      ]);
      t.equal(rows.length, 2);
    },
    'error-summary': async (t, q) => {
      const rows = await run(t, 'error-summary', q);
      t.match(rows, [
        { error: /destination exists with different content: .*ETag "…".*source .*ETag "…"/, state: 'conflict', keys: 1 },
        { error: 'not found in the source listing', state: 'missing', keys: 1 },
      ]);
    },
    'throughput-per-minute': async (t, q) => {
      const rows = await run(t, 'throughput-per-minute', q);
      t.ok(rows.length >= 1);
      t.equal(rows.reduce((n, r) => n + Number(r.done), 0), doneKeys, 'every done key is in some minute');
      t.equal(rows.reduce((n, r) => n + Number(r.settled), 0), doneKeys + 2, 'and every settled one');
    },
    'overall-rate': async (t, q) => {
      const [rate] = await run(t, 'overall-rate', q);
      t.equal(Number(rate!.keys_done), doneKeys);
      t.ok(Number(rate!.keys_per_second) > 0, `a rate: ${rate!.keys_per_second} keys/s`);
    },
    runs: async (t, q) => {
      const rows = await run(t, 'runs', q);
      t.match(rows, [
        { command: 'plan --list', status: 'succeeded', exit_code: 0, source: `s3://${env.sourceBucket}/image/` },
        { command: 'execute', status: 'failed', exit_code: 1, threads: '2', concurrency: '64', batch_size: '250', max_rps: '0' },
      ]);
      t.ok(Number(rows[1]!.keys_per_second) > 0, 'the run recorded its rate');
      t.notMatch(JSON.stringify(rows), env.env.AWS_SECRET_ACCESS_KEY!, 'no secret in the stored settings');
    },
    leases: async (t, q) => {
      t.same(await run(t, 'leases', q), [], 'no lease is left after a finished run');
      await client.query(
        "update bucket_migrate.migration_ledger set state = 'copied', locked_by = 'host:1:x/w0', locked_until = now() - interval '1 minute' where src_key = $1",
        [key],
      );
      t.match(await run(t, 'leases', q), [{ owner: 'host:1:x/w0', keys: '1', expired: true }]);
      await client.query("update bucket_migrate.migration_ledger set state = 'done', locked_by = null, locked_until = null where src_key = $1", [key]);
    },
  };

  const queries = documentedQueries();
  t.same([...queries.keys()].sort(), Object.keys(expectations).sort(), 'every documented query has a test, and every test a query');
  for (const [name, query] of queries) {
    const expect = expectations[name];
    if (expect) await t.test(name, (t) => expect(t, query));
  }
});
