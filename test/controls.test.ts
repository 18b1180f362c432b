import t from 'tap';
import { avatarPng } from '../src/seed/png.js';
import { runCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { listKeys, putObject, setupTestEnv, type TestEnv } from './helpers/services.js';

async function snapshot(env: TestEnv) {
  return {
    rows: await query(env.databaseUrl, 'select id, path from avatars order by id'),
    ledger: await query(env.databaseUrl, 'select * from bucket_migrate.migration_ledger order by id'),
    runs: await query(env.databaseUrl, 'select id, status from bucket_migrate.runs order by id'),
    source: await listKeys(env.s3client, env.sourceBucket, ''),
    target: await listKeys(env.s3client, env.targetBucket, ''),
  };
}

t.test('--dry-run prints the next actions and changes nothing', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '5', '--quiet'], { env: env.env })).code, 0);
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-2.png', Buffer.from('different'));
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-3.png', avatarPng('image/avatar-3.png'));
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  await query(env.databaseUrl, `delete from avatars where id = 4`);
  const { DeleteObjectCommand } = await import('@aws-sdk/client-s3');
  await env.s3client.send(new DeleteObjectCommand({ Bucket: env.sourceBucket, Key: 'image/avatar-4.png' }));

  const before = await snapshot(env);
  const dry = await runCli(['execute', '--dry-run', '10'], { env: env.env });
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /dry run: the next 5 keys/);
  t.match(dry.stdout, /image\/avatar-1\.png -> s3:\/\/.*\/avatar\/avatar-1\.png: copy, update ids 1, delete source/);
  t.match(dry.stdout, /avatar-2\.png: refuse: conflict/);
  t.match(dry.stdout, /avatar-3\.png: keep the identical copy, update ids 3, delete source/);
  t.match(dry.stdout, /avatar-4\.png: refuse: missing/);
  t.same(await snapshot(env), before, 'rows, ledger, runs and both buckets are identical');
});

t.test('--limit runs a canary of N keys, then stops cleanly', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '60', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const canary = await runCli(['execute', '--limit', '7', '--threads', '2', '--batch-size', '5'], { env: env.env });
  t.equal(canary.code, 0, canary.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 7, pending: 53 }, 'exactly 7 keys moved');
  const moved = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from avatars where path like 'avatar/%'`);
  t.equal(moved[0]?.n, 7);
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 53);
  const rest = await runCli(['execute'], { env: env.env });
  t.equal(rest.code, 0);
  t.same(await ledgerStates(env.databaseUrl), { done: 60 });
});
