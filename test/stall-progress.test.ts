/**
 * When S3 stops answering, progress lines say so ("S3 not answering since
 * T, retrying (N requests in flight)") instead of printing bare 0.0/s lines
 * (issue 15, item 4).
 */
import t from 'tap';
import { spawnCli } from './helpers/cli.js';
import { plannedTestEnv } from './helpers/planned-env.js';
import { startFaultProxy } from './support/fault-proxy.js';

t.test('an S3 freeze is named in the progress lines, and the run finishes once it ends', async (t) => {
  const env = await plannedTestEnv(t, 60);
  const proxy = await startFaultProxy(env.s3.endpoint);
  t.teardown(() => proxy.close());
  // --max-rps keeps the run going long enough to freeze S3 in the middle of it.
  const child = spawnCli(['execute', '--threads', '1', '--batch-size', '5', '--max-rps', '6', '--progress-interval', '1', '--log-format', 'json'], {
    env: { ...env.env, S3_ENDPOINT: proxy.endpoint },
    timeoutMs: 180_000,
  });
  let stderr = '';
  const waiters: Array<{ pattern: RegExp; resolve: () => void }> = [];
  child.child.stderr!.on('data', (chunk: Buffer | string) => {
    stderr += chunk.toString();
    for (const w of waiters.splice(0)) if (w.pattern.test(stderr)) w.resolve(); else waiters.push(w);
  });
  const seen = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      if (pattern.test(stderr)) return resolve();
      waiters.push({ pattern, resolve });
      child.child.once('close', () => reject(new Error(`never saw ${pattern}:\n${stderr}`)));
    });
  await seen(/"progress":true/);
  // Every request now waits 8 s before it is forwarded: to the client, S3 has gone silent.
  proxy.setConfig({ latencyMs: 8_000 });
  await seen(/S3 not answering since \d\d:\d\d:\d\d, retrying \(\d+ requests? in flight\)/);
  proxy.setConfig({});
  const result = await child.result;
  t.equal(result.code, 0, result.stderr);
  const stalled = result.stderr
    .split('\n')
    .filter((l) => l.includes('S3 not answering'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.ok(stalled.length >= 1, 'a progress line names the stall');
  t.match(stalled[0], { progress: true, waiting_for: 's3', s3_silent_since: String, s3_in_flight: Number });
  t.ok((stalled[0]!.s3_in_flight as number) >= 1, 'with the requests in flight');
  t.match(result.stderr, /"msg":"execute: 60 keys moved/, 'and the run finished');
});
