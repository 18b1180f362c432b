/**
 * A refused `plan` leaves nothing behind: no ledger schema, no rows, no
 * ledger_config bound to the mistyped settings, no run row stuck `running`,
 * and the corrected command then simply works (issue 15, item 1).
 */
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';
import { ledgerStates, query } from './support/end-state.js';

async function schemaExists(url: string, schema: string): Promise<boolean> {
  return (await query(url, 'select 1 from pg_namespace where nspname = $1', [schema])).length > 0;
}

async function tablesIn(url: string, schema: string): Promise<string[]> {
  const rows = await query<{ relname: string }>(
    url,
    `select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 order by 1`,
    [schema],
  );
  return rows.map((r) => r.relname);
}

t.test('plan with a bucket that does not exist: refused before anything is created', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '12', '--quiet'], { env: env.env })).code, 0);

  const cases: Array<[string, string[], RegExp]> = [
    ['plan --list, missing source', ['plan', '--list', '--source-bucket', 'nope-bucket'], /SOURCE_BUCKET nope-bucket does not exist/],
    ['plan, missing source', ['plan', '--source-bucket', 'nope-bucket'], /SOURCE_BUCKET nope-bucket does not exist/],
    ['plan, missing target', ['plan', '--target-bucket', 'nope-target'], /TARGET_BUCKET nope-target does not exist/],
    ['plan, bad credentials', ['plan'], /S3 rejected the credentials/],
  ];
  for (const [what, args, message] of cases) {
    const extra = what.includes('credentials') ? { AWS_SECRET_ACCESS_KEY: 'wrong-secret-wrong-secret' } : {};
    const refused = await runCli(args, { env: { ...env.env, ...extra } });
    t.equal(refused.code, 2, `${what}: exit 2\n${refused.stderr}`);
    t.match(refused.stderr, message, `${what}: names the problem`);
    t.equal(refused.stderr.trim().split('\n').length, 1, `${what}: one line\n${refused.stderr}`);
    t.notOk(await schemaExists(env.databaseUrl, 'bucket_migrate'), `${what}: no ledger schema left behind`);
  }

  // A schema pre-created for a least-privilege role stays, and stays empty.
  await query(env.databaseUrl, 'create schema precreated');
  const intoPrecreated = await runCli(['plan', '--list', '--source-bucket', 'nope-bucket', '--ledger-schema', 'precreated'], { env: env.env });
  t.equal(intoPrecreated.code, 2);
  t.ok(await schemaExists(env.databaseUrl, 'precreated'), 'a pre-created schema is kept');
  t.same(await tablesIn(env.databaseUrl, 'precreated'), [], '... with nothing created in it');

  const corrected = await runCli(['plan', '--list'], { env: env.env });
  t.equal(corrected.code, 0, `the corrected command works\n${corrected.stderr}`);
  t.same(await ledgerStates(env.databaseUrl), { pending: 12 });
  const runs = await query<{ command: string; status: string }>(env.databaseUrl, 'select command, status from bucket_migrate.runs order by id');
  t.same(runs, [{ command: 'plan --list', status: 'succeeded' }], 'one run, the corrected one, and it finished');
  const bound = await query<{ source_bucket: string }>(env.databaseUrl, 'select source_bucket from bucket_migrate.ledger_config');
  t.same(bound, [{ source_bucket: env.sourceBucket }], 'ledger_config names the real bucket');

  // An existing ledger keeps what it had when a later plan is refused.
  const again = await runCli(['plan', '--target-bucket', 'nope-target'], { env: env.env });
  t.equal(again.code, 2);
  t.same(await ledgerStates(env.databaseUrl), { pending: 12 }, 'the existing ledger is untouched');
  const runsAfter = await query<{ status: string }>(env.databaseUrl, `select status from bucket_migrate.runs where status = 'running'`);
  t.same(runsAfter, [], 'no run row stuck running');
});
