import t from 'tap';
import { avatarPng } from '../src/seed/png.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { getBytes, listKeys, setupTestEnv } from './helpers/services.js';
import { observeTestEnv } from './support/invariant-observer.js';

t.test('SIGKILL at random moments, a dozen times, never breaks a row; a final run finishes', async (t) => {
  const env = await setupTestEnv(t);
  // Enough work that a dozen short runs do not finish it before being killed.
  const keys = 3000;
  t.equal((await runCli(['seed', '--count', String(keys), '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);

  const observer = observeTestEnv(t, env);
  const args = ['execute', '--threads', '2', '--batch-size', '25', '--concurrency', '8', '--lease-seconds', '2', '--quiet'];
  let kills = 0;
  const seenStates = new Set<string>();
  for (let round = 0; round < 12; round++) {
    const before = JSON.stringify(await ledgerStates(env.databaseUrl));
    const running = spawnCli(args, { env: env.env });
    // Wait until this run has changed something (start-up takes a while on a
    // busy machine), then kill it at a random moment within the next 0.7 s.
    for (let i = 0; i < 100 && JSON.stringify(await ledgerStates(env.databaseUrl)) === before; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 700));
    const states = await ledgerStates(env.databaseUrl);
    for (const [state, n] of Object.entries(states)) if (n > 0) seenStates.add(state);
    running.child.kill('SIGKILL');
    const result = await running.result;
    if (result.signal === 'SIGKILL') kills++;
  }
  t.ok(kills >= 10, `killed ${kills} times mid-run`);
  // Mid-pipeline: a key between its copy and its source's delete. `deleting`
  // counts too: a fresh-clone CI run on Node 24 saw only pending, done and
  // deleting at its kill moments (the copied and db_updated windows are short).
  t.ok(['copied', 'db_updated', 'deleting'].some((s) => seenStates.has(s)), `kills landed mid-pipeline (${[...seenStates].join(', ')})`);

  const final = await runCli(['execute', '--threads', '2', '--lease-seconds', '2', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  await observer.stop();
  t.equal(final.code, 0, final.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: keys }, 'every key done');
  t.same(observer.violations, [], `no row ever pointed at a missing object (${observer.checks} checks)`);
  t.ok(observer.checks > 20, 'the observer really watched');

  const rows = await query<{ path: string }>(env.databaseUrl, 'select path from avatars');
  let intact = 0;
  for (const row of rows) {
    const bytes = await getBytes(env.s3client, env.targetBucket, row.path);
    if (bytes?.equals(avatarPng(`image/${row.path.slice('avatar/'.length)}`))) intact++;
  }
  t.equal(intact, keys, 'every object arrived with its original bytes');
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), [], 'image/ is empty');
  const attempts = await query<{ max: number }>(env.databaseUrl, 'select max(attempts)::int as max from bucket_migrate.migration_ledger');
  t.ok((attempts[0]?.max ?? 0) >= 1, 'attempts are recorded');
});
