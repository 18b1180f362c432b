/** `execute --metrics-port`: Prometheus text while the run lasts. */
import t from 'tap';
import { runCli, spawnCli, type SpawnedCli } from './helpers/cli.js';
import { plannedTestEnv } from './helpers/planned-env.js';
import { startFaultProxy } from './support/fault-proxy.js';

/** The port of the metrics line a run prints at start; loopback by default (nothing authenticates a scrape). */
function metricsPort(run: SpawnedCli): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let seen = '';
    run.child.stderr!.on('data', (chunk: Buffer | string) => {
      seen += chunk.toString();
      const match = /metrics: http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(seen);
      if (match) resolve(Number(match[1]));
    });
    run.child.once('close', () => reject(new Error(`no metrics line:\n${seen}`)));
  });
}

t.test('--metrics-port serves Prometheus text during the run', async (t) => {
  const env = await plannedTestEnv(t, 30);
  // Slow copies keep the run alive long enough to scrape it.
  const proxy = await startFaultProxy(env.s3.endpoint);
  t.teardown(() => proxy.close());
  proxy.setConfig({ latencyMs: 300, match: (r) => r.method === 'PUT' });
  const child = spawnCli(['execute', '--metrics-port', '0', '--threads', '1', '--concurrency', '1', '--batch-size', '2', '--quiet'], {
    env: { ...env.env, S3_ENDPOINT: proxy.endpoint },
  });
  const port = await metricsPort(child);
  let text = '';
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    t.equal(res.status, 200);
    text = await res.text();
    if (/bucket_migrate_keys_total\{outcome="done"\} [1-9]/.test(text) && /bucket_migrate_bytes_copied_total [1-9]/.test(text)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  t.match(text, /# TYPE bucket_migrate_keys_total counter/);
  t.match(text, /bucket_migrate_keys_total\{outcome="done"\} [1-9]/, 'done keys are counted while the run lasts');
  // Labels are stable across runs: the run id is on run_info only.
  t.match(text, /bucket_migrate_run_info\{command="execute",stage="full",run_id="\d+"\} 1/);
  t.notMatch(text.replace(/^bucket_migrate_run_info\{.*$/m, ''), /run_id=/, 'no other series carries the run id');
  t.match(text, /bucket_migrate_keys_claimed \d+/);
  // S3 requests by operation and outcome, latency histograms, bytes, retries, throttles, Postgres statement latency.
  t.match(text, /bucket_migrate_s3_requests_total\{operation="CopyObject",outcome="ok"\} [1-9]/);
  t.match(text, /bucket_migrate_s3_requests_total\{operation="ListObjectsV2",outcome="ok"\} [1-9]/);
  t.match(text, /# TYPE bucket_migrate_s3_request_duration_seconds histogram/);
  t.match(text, /bucket_migrate_s3_request_duration_seconds_bucket\{operation="CopyObject",le="\+Inf"\} [1-9]/);
  t.match(text, /bucket_migrate_s3_request_duration_seconds_count\{operation="CopyObject"\} [1-9]/);
  t.match(text, /bucket_migrate_bytes_copied_total [1-9]/);
  t.match(text, /bucket_migrate_s3_retries_total \d+/);
  t.match(text, /bucket_migrate_s3_throttles_total \d+/);
  t.match(text, /bucket_migrate_s3_in_flight \d+/);
  t.match(text, /# TYPE bucket_migrate_pg_statement_duration_seconds histogram/);
  t.match(text, /bucket_migrate_pg_statement_duration_seconds_count\{statement="with"\} [1-9]/);
  t.match(text, /bucket_migrate_process_resident_memory_bytes \d+/);
  const notFound = await fetch(`http://127.0.0.1:${port}/`);
  t.equal(notFound.status, 404);
  const result = await child.result;
  t.equal(result.code, 0, result.stderr);

  // revert takes --metrics-port too, with the same series.
  const back = spawnCli(['revert', '--metrics-port', '0', '--concurrency', '1', '--batch-size', '2', '--quiet'], {
    env: { ...env.env, S3_ENDPOINT: proxy.endpoint },
  });
  const revertPort = await metricsPort(back);
  let revertText = '';
  for (let i = 0; i < 50; i++) {
    revertText = await (await fetch(`http://127.0.0.1:${revertPort}/metrics`)).text();
    if (/bucket_migrate_keys_total\{outcome="reverted"\} [1-9]/.test(revertText)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  t.match(revertText, /bucket_migrate_run_info\{command="revert",stage="revert",run_id="\d+"\} 1/);
  t.match(revertText, /bucket_migrate_keys_total\{outcome="reverted"\} [1-9]/, 'reverted keys are counted while the revert lasts');
  t.match(revertText, /bucket_migrate_s3_requests_total\{operation="CopyObject",outcome="ok"\} [1-9]/);
  t.match(revertText, /bucket_migrate_pg_statement_duration_seconds_count\{statement="with"\} [1-9]/);
  t.equal((await back.result).code, 0);
});

t.test('--metrics-port on a port in use is a usage error before anything runs', async (t) => {
  const env = await plannedTestEnv(t, 3);
  const http = await import('node:http');
  const blocker = http.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, resolve));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as { port: number }).port;
  const result = await runCli(['execute', '--metrics-port', String(port), '--quiet'], { env: env.env });
  t.equal(result.code, 2, result.stderr);
  t.match(result.stderr, new RegExp(`--metrics-port ${port} on 127\\.0\\.0\\.1: .*EADDRINUSE`));
  const bad = await runCli(['execute', '--metrics-port', '0', '--metrics-host', '192.0.2.1', '--quiet'], { env: env.env });
  t.equal(bad.code, 2, 'an address this machine does not have is a usage error');
  t.match(bad.stderr, /--metrics-port 0 on 192\.0\.2\.1: .*EADDRNOTAVAIL/);
  t.equal(bad.stderr.trim().split('\n').length, 1, `one line: ${bad.stderr}`);
});
