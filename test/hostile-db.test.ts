/**
 * Hostile Postgres: every connection the tool holds on the test's database
 * terminated (`pg_terminate_backend`) once a second while execute runs. The
 * run must finish, or resume to the end, with no row ever naming a missing
 * object.
 *
 * Only the tool's connections (application_name `bucket-migrate...`) are
 * killed: the test's own reads between attempts and the observer's polls are
 * the witnesses, not the subject. Killing them once made a between-attempt
 * read throw, and the killer, never stopped, then held the file open until
 * tap's 600 s timeout (fresh-clone CI of ae9f8ec).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { runCli, spawnCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';
import { assertMigrated, captureBaseline, ledgerStates, query } from './support/end-state.js';
import { proxyTestEnv } from './support/fault-proxy.js';
import { observeTestEnv } from './support/invariant-observer.js';

t.test('Postgres connections terminated every second during a run', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '300', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const baseline = await captureBaseline(env);
  // Slow S3 down a little so the run spans several terminations.
  const { cliEnv: proxied } = await proxyTestEnv(t, env, { latencyMs: 30 });
  const cliEnv = { ...proxied, BUCKET_MIGRATE_DEBUG: '1' };
  const observer = observeTestEnv(t, env);

  let terminated = 0;
  let killing = true;
  const killer = (async () => {
    while (killing) {
      await sleep(1_000);
      const rows = await query<{ pid: number }>(
        env.databaseUrl,
        `select pg_terminate_backend(pid) as ok, pid from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()
           and application_name like 'bucket-migrate%'`,
      ).catch(() => []);
      terminated += rows.length;
    }
  })();
  const stopKiller = async () => {
    killing = false;
    await killer;
  };
  // Whatever ends the test, the killer stops: a loop left running keeps the
  // file alive until tap's timeout and hides the real failure.
  t.teardown(stopKiller);

  const args = ['execute', '--threads', '2', '--batch-size', '20', '--concurrency', '4', '--lease-seconds', '3', '--backoff-seconds', '0', '--quiet'];
  const runs: Array<{ code: number | null; stderr: string; seconds: number }> = [];
  // Attempts share one budget well inside tap's 600 s, so a hung execute
  // fails here, with its output, rather than as a file timeout.
  const deadline = Date.now() + 420_000;
  for (let attempt = 0; attempt < 6 && Date.now() < deadline - 10_000; attempt++) {
    const started = Date.now();
    const run = await spawnCli(args, { env: cliEnv, timeoutMs: deadline - started }).result;
    runs.push({ ...run, seconds: (Date.now() - started) / 1000 });
    const states = await ledgerStates(env.databaseUrl);
    t.comment(`attempt ${attempt + 1}: execute exited ${run.code} after ${runs.at(-1)!.seconds.toFixed(1)} s (${JSON.stringify(states)})`);
    if (run.code === 0 && Object.keys(states).every((s) => s === 'done')) break;
    t.comment(run.stderr.trim().split('\n').slice(-12).join(' | '));
  }
  await stopKiller();
  t.ok(terminated >= 3, `${terminated} connections terminated during the run`);
  t.equal(runs[0]?.code, 0, `the first execute rides out the terminations\n${runs[0]?.stderr}`);
  t.equal(runs.at(-1)?.code, 0, 'execute ends successfully');

  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
  await assertMigrated(t, env, baseline);
});
