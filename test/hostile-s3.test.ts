/**
 * Hostile S3: 10% of requests failing in every way the fault proxy knows,
 * MinIO frozen for 5 s, and MinIO stopped and restarted on its data dir, all
 * mid-run. Each ends migrated, and an observer checks throughout that no row
 * ever names a missing object.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { runCli, spawnCli } from './helpers/cli.js';
import { setupTestEnv, type TestEnv } from './helpers/services.js';
import { assertMigrated, captureBaseline, ledgerStates, type Baseline } from './support/end-state.js';
import { proxyTestEnv, type FaultProxy } from './support/fault-proxy.js';
import { observeTestEnv, type InvariantObserver } from './support/invariant-observer.js';

const KEYS = 200;

interface Scenario {
  env: TestEnv;
  proxy: FaultProxy;
  /** The CLI's environment, with S3 through the proxy. */
  cliEnv: NodeJS.ProcessEnv;
  baseline: Baseline;
  observer: InvariantObserver;
}

async function prepare(t: Test, keys = KEYS): Promise<Scenario> {
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', String(keys), '--quiet'], { env: env.env });
  t.equal(seeded.code, 0, `seed: ${seeded.stderr}`);
  const planned = await runCli(['plan'], { env: env.env });
  t.equal(planned.code, 0, `plan: ${planned.stderr}`);
  const baseline = await captureBaseline(env);
  t.equal(baseline.objects.size, keys);
  const { proxy, cliEnv } = await proxyTestEnv(t, env);
  const observer = observeTestEnv(t, env);
  return { env, proxy, cliEnv, baseline, observer };
}

async function finish(t: Test, s: Scenario): Promise<void> {
  await s.observer.stop();
  t.ok(s.observer.checks > 3, `the observer checked ${s.observer.checks} times (${s.observer.errors} polls failed)`);
  t.same(s.observer.violations, [], 'no row ever named a missing object');
  await assertMigrated(t, s.env, s.baseline);
}

const EXECUTE = ['execute', '--threads', '2', '--batch-size', '25', '--concurrency', '8', '--lease-seconds', '3', '--quiet'];

t.test('10% of S3 requests fail, mixed kinds', async (t) => {
  const s = await prepare(t);
  s.proxy.setConfig({ slowDownRate: 0.02, internalErrorRate: 0.02, resetBeforeRate: 0.02, resetAfterRate: 0.02, truncateRate: 0.02 });
  const run = await runCli([...EXECUTE, '--backoff-seconds', '0', '--max-attempts', '10'], { env: s.cliEnv, timeoutMs: 120_000 });
  s.proxy.setConfig({});
  t.equal(run.code, 0, `execute succeeds through the faults\n${run.stderr}`);
  const injected = s.proxy.stats.injected;
  t.comment(`requests ${s.proxy.stats.requests}, injected ${JSON.stringify(injected)}`);
  for (const kind of ['slowDown', 'internalError', 'resetBefore', 'resetAfter', 'truncate']) {
    t.ok((injected[kind] ?? 0) > 0, `${kind} was injected`);
  }
  await finish(t, s);
});

t.test('a 503 on the start-up checks is retried, not taken for a configuration error', async (t) => {
  const s = await prepare(t, 20);
  // The first request of each bucket's preflight listing is refused once.
  const refused = new Set<string>();
  s.proxy.setConfig({
    errorFor: (req) => {
      const bucket = req.url.split('/')[1]!.split('?')[0]!;
      if (req.method !== 'GET' || !/[?&]max-keys=1(&|$)/.test(req.url) || refused.has(bucket)) return undefined;
      refused.add(bucket);
      return { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' };
    },
  });
  const run = await runCli(EXECUTE, { env: s.cliEnv, timeoutMs: 120_000 });
  s.proxy.setConfig({});
  t.equal(refused.size, 2, 'both preflight listings were refused once');
  t.equal(run.code, 0, `execute goes on\n${run.stderr}`);
  await finish(t, s);
});

/** Starts execute slowly enough (latency per request) that a fault lands mid-run. */
async function startSlowRun(s: Scenario, extra: string[] = []) {
  s.proxy.setConfig({ latencyMs: 40 });
  const run = spawnCli([...EXECUTE, '--concurrency', '4', '--backoff-seconds', '1', '--max-attempts', '20', ...extra], {
    env: s.cliEnv,
    timeoutMs: 150_000,
  });
  // Wait until some keys are done and most are not.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const states = await ledgerStates(s.env.databaseUrl);
    if ((states.done ?? 0) >= 20) return { run, doneBefore: states.done ?? 0 };
    if (Date.now() > deadline) throw new Error(`execute made no progress: ${JSON.stringify(states)}`);
    await sleep(50);
  }
}

t.test('MinIO frozen (SIGSTOP) for 5 s mid-run', async (t) => {
  const s = await prepare(t, 150);
  const { run, doneBefore } = await startSlowRun(s);
  t.ok(doneBefore < 150, 'paused mid-run');
  s.env.s3.pause!();
  await sleep(5_000);
  s.env.s3.resume!();
  const result = await run.result;
  t.equal(result.code, 0, `execute rides out the freeze\n${result.stderr}`);
  await finish(t, s);
});

t.test('MinIO stopped and restarted on the same data dir mid-run', async (t) => {
  const s = await prepare(t, 150);
  const { run, doneBefore } = await startSlowRun(s);
  t.ok(doneBefore < 150, 'restarted mid-run');
  await s.env.s3.restart!();
  let result = await run.result;
  // Keys that ran out of tries while MinIO was down are `failed`, never lost:
  // the documented recovery is --retry-failed.
  if (result.code !== 0) {
    t.comment(`first run exited ${result.code}: ${result.stderr.split('\n').slice(-4).join(' | ')}`);
    s.proxy.setConfig({});
    result = await runCli([...EXECUTE, '--retry-failed', '--backoff-seconds', '0'], { env: s.cliEnv, timeoutMs: 120_000 });
  }
  t.equal(result.code, 0, `execute completes after the restart\n${result.stderr}`);
  await finish(t, s);
});
