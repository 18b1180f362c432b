/**
 * After a revert, `report` and the audit views tell the truth: `progress`
 * counts the reverted keys (it used to show zeros), `failures` does not list
 * reverted or reverting keys (it used to list `reverting` ones), the text
 * report shows both revert states, and the views list every state the code
 * knows (a state added to ALL_STATES without a migration fails here).
 */
import t from 'tap';
import { ALL_STATES, TERMINAL_STATES } from '../src/ledger/state-machine.js';
import { runCli } from './helpers/cli.js';
import { query } from './helpers/db.js';
import { plannedTestEnv } from './helpers/planned-env.js';

t.test('after a revert, report and the audit views show the reverted keys', async (t) => {
  const env = await plannedTestEnv(t, 12);
  const cli = (args: string[]) => runCli(args, { env: env.env, timeoutMs: 120_000 });
  const run = await cli(['execute', '--quiet']);
  t.equal(run.code, 0, run.stderr);
  const back = await cli(['revert', '--limit', '10', '--batch-size', '5', '--quiet']);
  t.equal(back.code, 0, back.stderr);
  // A revert stopped half-way: rows back on the source, the target copy not yet deleted.
  await query(
    env.databaseUrl,
    `update bucket_migrate.migration_ledger set state = 'reverting', reverted_at = null
     where id = (select min(id) from bucket_migrate.migration_ledger where state = 'reverted')`,
  );

  const progress = await query<{ state: string; terminal: boolean; keys: string; percent: string }>(
    env.databaseUrl,
    'select state, terminal, keys, percent from bucket_migrate.progress',
  );
  t.same(progress.map((r) => r.state), [...ALL_STATES], 'progress lists every state, in ALL_STATES order');
  t.same(
    progress.filter((r) => r.terminal).map((r) => r.state).sort(),
    [...TERMINAL_STATES].sort(),
    'terminal exactly for the terminal states (reverting is not)',
  );
  const keys = Object.fromEntries(progress.map((r) => [r.state, Number(r.keys)]));
  t.match(keys, { done: 2, reverted: 9, reverting: 1, pending: 0, failed: 0 }, 'the reverted keys are counted');
  t.equal(progress.reduce((n, r) => n + Number(r.percent), 0).toFixed(0), '100', 'percents add up to 100');

  const failures = await query<{ state: string }>(env.databaseUrl, 'select state from bucket_migrate.failures');
  t.same(failures, [], 'neither reverted nor reverting keys are failures');

  const perMinute = await query<{ reverted: string; settled: string }>(
    env.databaseUrl,
    'select sum(reverted)::int as reverted, sum(settled)::int as settled from bucket_migrate.throughput_per_minute',
  );
  t.match(perMinute[0], { reverted: 9, settled: 11 }, 'throughput counts reverted keys, and a reverting key is not settled');

  const history = await query<{ row_outcome: string; key_state: string }>(
    env.databaseUrl,
    "select row_outcome, key_state from bucket_migrate.row_history where key_state = 'reverted'",
  );
  t.equal(history.length, 9);
  t.ok(history.every((h) => h.row_outcome === 'reverted'), 'row_history says the rows went back');
  const changes = await query<{ old_path: string; new_path: string }>(
    env.databaseUrl,
    "select old_path, new_path from bucket_migrate.row_changes where starts_with(old_path, 'avatar/')",
  );
  t.equal(changes.length, 10, 'row_changes lists every row moved back (the reverting key too)');
  t.ok(changes.every((c) => c.new_path === `image/${c.old_path.slice('avatar/'.length)}`), 'from the target key to the source key');

  const json = await cli(['report', '--json']);
  t.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as { states: Record<string, number>; progress: { remaining: number; settled: number } };
  t.match(report.states, { done: 2, reverted: 9, reverting: 1 });
  t.same(report.progress.remaining, 1, 'the reverting key is remaining');
  t.same(report.progress.settled, 11);
  const text = await cli(['report']);
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /states\s+.*reverting 1, .*reverted 9/, 'the text report shows both revert states');
});
