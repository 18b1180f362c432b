/**
 * Retries are bounded: a permanent error (AccessDenied, NoSuchBucket) stops
 * the run fast with one clear line, and a transient error that never clears
 * gives up after --max-attempts. Either way nothing is lost: once the fault
 * is gone, execute finishes the move.
 */
import t, { type Test } from 'tap';
import { runCli, type CliResult } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';
import { assertMigrated, captureBaseline, ledgerStates } from './support/end-state.js';
import { proxyTestEnv, type FaultConfig } from './support/fault-proxy.js';
import { observeTestEnv } from './support/invariant-observer.js';

const KEYS = 60;
const EXECUTE = ['execute', '--threads', '1', '--batch-size', '20', '--backoff-seconds', '0', '--lease-seconds', '3', '--quiet'];

function errorLines(result: CliResult): string[] {
  return result.stderr.split('\n').filter((l) => l.startsWith('bucket-migrate:'));
}

async function scenario(
  t: Test,
  fault: FaultConfig,
  check: (t: Test, result: CliResult, ms: number, stats: { requests: number; injected: Record<string, number> }) => void,
  extra: string[] = [],
): Promise<void> {
  const env = await setupTestEnv(t);
  const seed = await runCli(['seed', '--count', String(KEYS), '--quiet'], { env: env.env });
  t.equal(seed.code, 0, `seed\n${seed.stderr}`);
  const plan = await runCli(['plan'], { env: env.env });
  t.equal(plan.code, 0, `plan\n${plan.stderr}`);
  const baseline = await captureBaseline(env);
  const { proxy, cliEnv } = await proxyTestEnv(t, env, fault);
  const observer = observeTestEnv(t, env);
  const started = Date.now();
  const result = await runCli([...EXECUTE, ...extra], { env: cliEnv, timeoutMs: 60_000 });
  check(t, result, Date.now() - started, proxy.stats);
  t.comment(`ledger after the failed run: ${JSON.stringify(await ledgerStates(env.databaseUrl))}`);

  // The fault clears: the same command (with --retry-failed) finishes the move.
  proxy.setConfig({});
  const again = await runCli([...EXECUTE, '--retry-failed'], { env: cliEnv, timeoutMs: 60_000 });
  t.equal(again.code, 0, `once the fault is gone, execute finishes\n${again.stderr}`);
  await observer.stop();
  t.same(observer.violations, [], 'no row ever named a missing object');
  await assertMigrated(t, env, baseline);
}

const isCopy = (r: { method: string; url: string }) => r.method === 'PUT';
const isDelete = (r: { method: string; url: string }) => r.method === 'POST' && /[?&]delete/.test(r.url);

t.test('AccessDenied on copy fails fast with one line, no retries', (t) =>
  scenario(t, { errorFor: (r) => (isCopy(r) ? { status: 403, code: 'AccessDenied', message: 'Access Denied.' } : undefined) }, (t, result, ms, stats) => {
    // A missing privilege is a configuration error (exit 2), named with the grant that fixes it.
    t.equal(result.code, 2, 'exit 2: the run cannot go on until the grant is fixed');
    t.same(errorLines(result).length, 1, `one error line:\n${result.stderr}`);
    t.match(errorLines(result)[0], /stopped: S3 refused a request \(copy: AccessDenied \(HTTP 403\).*\(key image\/avatar-\d+\.png\)\): grant s3:/);
    t.ok(ms < 20_000, `fast (${ms} ms)`);
    // --pipeline 2 (the default): two batches of 20 were in flight, each key tried once; plus the
    // start-up If-None-Match probe's first scratch PUT (src/copy/probe-conditional.ts), not retried either.
    t.ok((stats.injected.errorFor ?? 0) <= 41, `no retries: ${stats.injected.errorFor} denied copies for two batches of 20 and the probe's PUT`);
  }),
);

t.test('NoSuchBucket on delete fails fast with one line', (t) =>
  scenario(t, { errorFor: (r) => (isDelete(r) ? { status: 404, code: 'NoSuchBucket', message: 'The specified bucket does not exist' } : undefined) }, (t, result, ms, stats) => {
    t.equal(result.code, 1);
    t.same(errorLines(result).length, 1, `one error line:\n${result.stderr}`);
    t.match(errorLines(result)[0], /stopped: delete: NoSuchBucket \(HTTP 404\)/);
    t.ok(ms < 20_000, `fast (${ms} ms)`);
    // Plus the start-up probe's one DeleteObjects of its scratch objects.
    t.ok((stats.injected.errorFor ?? 0) <= 3, `not retried: ${stats.injected.errorFor} deletes, one per batch in flight and the probe's`);
  }),
);

t.test('a transient error that never clears gives up after --max-attempts', (t) =>
  scenario(
    t,
    { internalErrorRate: 1, match: isCopy },
    (t, result, ms, stats) => {
      t.equal(result.code, 1, `exit 1: keys failed\n${result.stderr}`);
      t.match(result.stderr, /some keys failed/);
      t.ok(ms < 45_000, `bounded (${ms} ms)`);
      // 4 tries per request, 2 attempts per key; the start-up probe's first PUT is tried once.
      t.ok((stats.injected.internalError ?? 0) <= KEYS * 2 * 4 + 1, `bounded requests: ${stats.injected.internalError}`);
    },
    ['--max-attempts', '2'],
  ),
);
