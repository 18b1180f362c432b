/**
 * `execute --finish-superseded` (issue 15, item 5): a key whose every row the
 * application moved elsewhere before the commit is `superseded`, with both
 * its source and its copy kept, and `validate --strict` fails on it for
 * ever. The flag puts such keys back on the delete path: the copy is
 * checked, the key fenced, rows that name the source by then move onto the
 * copy, and only then is the source deleted.
 *
 * Run for real: the application keeps writing rows that name the superseded
 * sources while the finishing run deletes them, one copy was deleted and
 * another replaced by someone else since, and the invariant observer
 * watches the rows against both buckets throughout.
 */
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { listKeys, objectExists, putObject, setupTestEnv } from './helpers/services.js';
import { brokenRows, startWriter } from './support/application.js';
import { observeTestEnv } from './support/invariant-observer.js';

const KEYS = 40;
/** avatar-1 .. avatar-20 end superseded; avatar-21 .. avatar-40 done. */
const SUPERSEDED = 20;

t.test('superseded keys are finished under the guard while the application writes their source paths', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', String(KEYS), '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  // After the plan, the application points every row of the first 20 keys elsewhere (at an object that exists).
  await putObject(env.s3client, env.targetBucket, 'avatar/elsewhere.png', Buffer.from('elsewhere'));
  await query(env.databaseUrl, `update avatars set path = 'avatar/elsewhere.png' where path ~ '^image/avatar-([1-9]|1[0-9]|20)\\.png$'`);
  const first = await runCli(['execute', '--quiet'], { env: env.env });
  t.equal(first.code, 0, first.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: KEYS - SUPERSEDED, superseded: SUPERSEDED });
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, SUPERSEDED, 'superseded sources are kept');
  const strict = await runCli(['validate', '--strict'], { env: env.env });
  t.not(strict.code, 0, 'validate --strict fails while superseded sources remain');
  const report = await runCli(['report'], { env: env.env });
  t.match(report.stdout, /^\s*superseded \(20\) \(.*execute --finish-superseded/m, 'report says how to finish them');

  // Since: the application names one superseded source again, someone
  // deleted one copy and replaced another.
  await query(env.databaseUrl, `insert into avatars (path) values ('image/avatar-2.png')`);
  await env.s3client.send(new DeleteObjectCommand({ Bucket: env.targetBucket, Key: 'avatar/avatar-3.png' }));
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-4.png', Buffer.from('not the copy'));

  const refused = await runCli(['execute', '--keep-source', '--finish-superseded'], { env: env.env });
  t.equal(refused.code, 2, 'with --keep-source: a usage error');
  t.match(refused.stderr, /--finish-superseded deletes sources, which --keep-source never does/);
  t.equal(refused.stderr.trim().split('\n').length, 1, 'in one line');

  const observer = observeTestEnv(t, env);
  // The application keeps naming the superseded sources (5 .. 20) during the run, in new rows and in rows it wrote.
  const writer = startWriter(env.databaseUrl, SUPERSEDED - 4, 'image/', 11, { firstKey: 5, updateIdsAbove: KEYS + 1 });
  const finish = await runCli(['execute', '--finish-superseded', '--batch-size', '4', '--threads', '2'], { env: env.env, timeoutMs: 120_000 });
  await writer.stop();
  t.equal(finish.code, 1, `the two refused keys make the exit code 1: ${finish.stderr}`);
  t.match(finish.stderr, /finishing 20 superseded keys/);
  t.ok(writer.writes > 0, `the application wrote ${writer.writes} times during the run`);
  // Rows the application wrote after a key's fence are redirected to its
  // copy; those written before a delete are moved. A last run settles keys
  // the application kept writing until the last round.
  const last = await runCli(['execute', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.ok(last.code === 0 || last.code === 1, last.stderr);
  await observer.stop();
  t.same(observer.violations, [], `no row ever named a deleted object (${observer.checks} checks)`);
  t.same(await brokenRows(env), [], 'no row names a missing object at the end');

  t.same(await ledgerStates(env.databaseUrl), { done: KEYS - 2, failed: 2 }, 'every superseded key is done but the two whose copy changed');
  const failed = await query<{ src_key: string; last_error: string }>(
    env.databaseUrl,
    `select src_key, last_error from bucket_migrate.migration_ledger where state = 'failed' order by src_key`,
  );
  t.match(failed, [
    { src_key: 'image/avatar-3.png', last_error: /does not exist; source kept/ },
    { src_key: 'image/avatar-4.png', last_error: /source kept/ },
  ]);
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), ['image/avatar-3.png', 'image/avatar-4.png'], 'only the refused sources are left');
  t.ok(await objectExists(env.s3client, env.targetBucket, 'avatar/avatar-1.png'), 'the copies stay');
  const named = await query<{ path: string }>(env.databaseUrl, `select path from avatars where path like 'image/%' and path not in ('image/avatar-3.png', 'image/avatar-4.png')`);
  t.same(named, [], 'every row that named a finished source names its copy');
  const rowOfTwo = await query<{ path: string }>(env.databaseUrl, `select path from avatars where id = ${KEYS + 1}`);
  t.same(rowOfTwo, [{ path: 'avatar/avatar-2.png' }], 'the row written before the run was moved onto the copy');
});
