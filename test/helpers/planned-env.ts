import type { Test } from 'tap';
import { runCli } from './cli.js';
import { setupTestEnv, type TestEnv } from './services.js';

/**
 * A test's own database and buckets with `count` keys seeded (the seed's
 * table, objects and rows) and planned: where most end-to-end tests start.
 * Both steps are asserted to exit 0.
 */
export async function plannedTestEnv(t: Test, count: number): Promise<TestEnv> {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', String(count), '--quiet'], { env: env.env, timeoutMs: 120_000 })).code, 0, `seeded ${count} keys`);
  t.equal((await runCli(['plan'], { env: env.env, timeoutMs: 120_000 })).code, 0, 'planned');
  return env;
}
