/**
 * Adaptive request rate against a server that throttles: the fault proxy
 * answers 503 SlowDown to every request above a set rate (a token bucket),
 * as S3 does while it scales a prefix. execute must finish with no failed
 * key, and its request rate must settle below the limit, with few throttles
 * once settled. And `--max-rps` caps the rate of a whole process, across its
 * threads, on its own.
 */
import pg from 'pg';
import t, { type Test } from 'tap';
import { runCli } from './helpers/cli.js';
import { listKeys, setupTestEnv, type TestEnv } from './helpers/services.js';
import { startFaultProxy, type FaultProxy } from './support/fault-proxy.js';

async function ledgerStates(url: string): Promise<Record<string, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result = await client.query<{ state: string; n: number }>(
      'select state, count(*)::int as n from bucket_migrate.migration_ledger group by state',
    );
    return Object.fromEntries(result.rows.map((r) => [r.state, r.n]));
  } finally {
    await client.end();
  }
}

async function prepare(t: Test, keys: number): Promise<TestEnv> {
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', String(keys), '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(seeded.code, 0, `seed: ${seeded.stderr}`);
  // Listed first, so execute makes no HEAD of the source: two requests per key.
  const planned = await runCli(['plan', '--list'], { env: env.env });
  t.equal(planned.code, 0, `plan: ${planned.stderr}`);
  return env;
}

interface Sample {
  at: number;
  requests: number;
  throttled: number;
}

/** Samples the proxy's counters every 250 ms while `work` runs. */
async function sampled<T>(proxy: FaultProxy, work: () => Promise<T>): Promise<{ result: T; samples: Sample[] }> {
  const samples: Sample[] = [];
  const take = () =>
    samples.push({
      at: Date.now(),
      requests: proxy.stats.requests,
      throttled: Object.values(proxy.stats.injected).reduce((a, b) => a + b, 0),
    });
  take();
  const timer = setInterval(take, 250);
  try {
    const result = await work();
    return { result, samples };
  } finally {
    clearInterval(timer);
    take();
  }
}

/** Requests per second and throttled share between two fractions of the run's duration. */
function window(samples: Sample[], from: number, to: number) {
  const start = samples[0]!.at;
  const span = samples[samples.length - 1]!.at - start;
  const pick = (f: number) => samples.reduce((best, s) => (Math.abs(s.at - start - f * span) < Math.abs(best.at - start - f * span) ? s : best));
  const a = pick(from);
  const b = pick(to);
  const seconds = (b.at - a.at) / 1000;
  const requests = b.requests - a.requests;
  const throttled = b.throttled - a.throttled;
  return { seconds, requests, throttled, rate: requests / seconds, throttledShare: requests ? throttled / requests : 0 };
}

const fmt = (w: ReturnType<typeof window>) =>
  `${w.rate.toFixed(1)} requests/s over ${w.seconds.toFixed(1)} s, ${w.throttled} of ${w.requests} throttled (${(100 * w.throttledShare).toFixed(1)}%)`;

t.test('503 SlowDown above a rate: no failed key, and the rate settles below it', async (t) => {
  const KEYS = 500;
  const LIMIT = 60;
  const env = await prepare(t, KEYS);
  const proxy = await startFaultProxy(env.s3.endpoint, { slowDownAboveRps: LIMIT });
  t.teardown(() => proxy.close());

  // Defaults otherwise: 64 requests in flight per thread, 5 attempts per key.
  const { result: run, samples } = await sampled(proxy, () =>
    runCli(['execute', '--threads', '2', '--batch-size', '100', '--quiet'], {
      env: { ...env.env, S3_ENDPOINT: proxy.endpoint },
      timeoutMs: 300_000,
    }),
  );
  t.equal(run.code, 0, `execute succeeds\n${run.stderr}`);
  t.comment(run.stderr.trim());
  const states = await ledgerStates(env.databaseUrl);
  t.same(states, { done: KEYS }, 'every key is done: none failed, none left');
  t.equal((await listKeys(env.s3client, env.targetBucket)).length, KEYS, 'every object is at the target');

  const injected = proxy.stats.injected.slowDownAboveRps ?? 0;
  t.ok(injected > 0, `the server did throttle (${injected} SlowDown answers of ${proxy.stats.requests} requests)`);
  const whole = window(samples, 0, 1);
  const start = window(samples, 0, 0.2);
  const settled = window(samples, 0.4, 0.9);
  t.comment(`limit ${LIMIT}/s; whole run: ${fmt(whole)}`);
  t.comment(`first 20%: ${fmt(start)}`);
  t.comment(`40% to 90%: ${fmt(settled)}`);
  t.ok(settled.rate < LIMIT, `settled request rate ${settled.rate.toFixed(1)}/s is below the limit ${LIMIT}/s`);
  t.ok(settled.throttledShare < 0.1, `once settled, few requests are throttled (${(100 * settled.throttledShare).toFixed(1)}%)`);
});

t.test('--max-rps caps the whole process, across its threads', async (t) => {
  const KEYS = 200;
  const MAX_RPS = 30;
  const env = await prepare(t, KEYS);
  // A limit above the cap: the cap alone must keep the rate down.
  const proxy = await startFaultProxy(env.s3.endpoint, { slowDownAboveRps: 2 * MAX_RPS });
  t.teardown(() => proxy.close());
  const { result: run, samples } = await sampled(proxy, () =>
    runCli(['execute', '--threads', '2', '--max-rps', String(MAX_RPS), '--batch-size', '50', '--quiet'], {
      env: { ...env.env, S3_ENDPOINT: proxy.endpoint },
      timeoutMs: 300_000,
    }),
  );
  t.equal(run.code, 0, `execute succeeds\n${run.stderr}`);
  t.same(await ledgerStates(env.databaseUrl), { done: KEYS }, 'every key is done');
  const steady = window(samples, 0.1, 0.9);
  t.comment(`--max-rps ${MAX_RPS}: ${fmt(steady)}; throttled in all ${proxy.stats.injected.slowDownAboveRps ?? 0}`);
  // Each thread holds half the cap; a bucket's burst is a tenth of a second's worth.
  t.ok(steady.rate <= MAX_RPS * 1.1, `request rate ${steady.rate.toFixed(1)}/s stays within --max-rps ${MAX_RPS}`);
  t.equal(proxy.stats.injected.slowDownAboveRps ?? 0, 0, 'the cap alone kept the server from throttling');
});
