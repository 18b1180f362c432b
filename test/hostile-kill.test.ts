/**
 * The process SIGKILLed while keys are in each live state (pending, copied,
 * db_updated), 5 times each, every kill followed by a new process that
 * resumes. Each state is held open on purpose so the kill lands in it:
 * - pending: copies are slowed by the fault proxy (latency on PUT), so the
 *   kill lands while CopyObject requests are in flight;
 * - copied: the test holds a SHARE lock on the table, so the commit of the
 *   rows waits while the ledger already says `copied`;
 * - db_updated: DeleteObjects (POST ?delete) is slowed, so the kill lands
 *   after the rows moved and before the sources are gone.
 * An observer checks throughout that no row ever names a missing object.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import t from 'tap';
import { runCli, spawnCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';
import { assertMigrated, captureBaseline, query } from './support/end-state.js';
import { proxyTestEnv, type FaultConfig } from './support/fault-proxy.js';
import { observeTestEnv } from './support/invariant-observer.js';

const ROUNDS = 5;
const LIVE = ['pending', 'copied', 'db_updated'] as const;

t.test('SIGKILL during each state, then resume', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '240', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const baseline = await captureBaseline(env);
  const { proxy, cliEnv } = await proxyTestEnv(t, env);
  const observer = observeTestEnv(t, env);
  const args = ['execute', '--threads', '1', '--pipeline', '1', '--batch-size', '8', '--concurrency', '4', '--lease-seconds', '2', '--backoff-seconds', '0', '--quiet'];

  const hold: Record<(typeof LIVE)[number], FaultConfig> = {
    pending: { latencyMs: 3_000, match: (r) => r.method === 'PUT' },
    copied: {},
    db_updated: { latencyMs: 3_000, match: (r) => r.method === 'POST' },
  };
  const kills: Record<string, number> = { pending: 0, copied: 0, db_updated: 0 };

  // One kill attempt: start a process, wait until one of its keys sits in
  // `state`, then SIGKILL it. Returns how many keys were seen in the state
  // (0 when the wait ran out: under a loaded machine the process can take
  // longer to start and claim than the wait allows).
  async function killIn(state: (typeof LIVE)[number], label: string): Promise<number> {
    proxy.setConfig(hold[state]);
    let locker: pg.Client | undefined;
    if (state === 'copied') {
      locker = new pg.Client({ connectionString: env.databaseUrl });
      locker.on('error', () => undefined);
      await locker.connect();
      await locker.query('begin');
      await locker.query('lock table avatars in share mode');
    }
    const roundStart = Date.now();
    const child = spawnCli(args, { env: cliEnv, timeoutMs: 90_000 });
    const pid = child.child.pid!;
    // Kill once a key of this process has sat in `state` for a moment. The
    // owner's pid is part of locked_by; its lease may have lapsed on a loaded
    // machine, which does not change whose key it is.
    // Start-up alone takes 10-16 s here: the probes at start send PUTs and POSTs
    // through the proxy, which holds them 3 s each.
    const deadline = Date.now() + 45_000;
    let seen = 0;
    for (;;) {
      const rows = await query<{ n: number }>(
        env.databaseUrl,
        `select count(*)::int as n from bucket_migrate.migration_ledger
         where state = $1 and locked_by like $2`,
        [state, `%:${pid}:%`],
      );
      seen = rows[0]?.n ?? 0;
      if (seen > 0) break;
      if (Date.now() > deadline) break;
      await sleep(25);
    }
    await sleep(100);
    child.child.kill('SIGKILL');
    const result = await child.result;
    if (locker) await locker.end();
    t.equal(result.signal, 'SIGKILL', `${label}: killed with ${seen} keys ${state} after ${Date.now() - roundStart} ms`);
    t.same(observer.violations, [], `no violation after ${label} in ${state}`);
    return seen;
  }

  // A round whose kill did not land in its state is tried again (at most
  // ATTEMPTS times), so the count below still fails if a state is never
  // reached, but a slow start on a loaded machine does not.
  const ATTEMPTS = 4;
  for (let round = 0; round < ROUNDS; round++) {
    for (const state of LIVE) {
      for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
        const seen = await killIn(state, `round ${round + 1} attempt ${attempt}`);
        if (seen > 0) {
          kills[state]! += 1;
          break;
        }
      }
    }
  }
  t.same(kills, { pending: ROUNDS, copied: ROUNDS, db_updated: ROUNDS }, 'every kill landed in its state');

  proxy.setConfig({});
  const finalStart = Date.now();
  // Leases of the killed processes expire after 2 s; the resume waits them out.
  const final = await runCli(['execute', '--threads', '2', '--lease-seconds', '2', '--backoff-seconds', '0', '--quiet'], {
    env: cliEnv,
    timeoutMs: 120_000,
  });
  t.equal(final.code, 0, `the resumed run finishes in ${Date.now() - finalStart} ms\n${final.stderr}`);
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a missing object (${observer.checks} checks)`);
  await assertMigrated(t, env, baseline);
});
