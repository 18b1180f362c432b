import { DeleteObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { userMetadata } from '../src/copy/provenance.js';
import { avatarPng } from '../src/seed/png.js';
import { awkwardNames } from '../src/seed/seed.js';
import { runCli, spawnCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { getBytes, listKeys, objectExists, putObject, setupTestEnv } from './helpers/services.js';

t.test('seed, plan and execute move every key, awkward ones included', async (t) => {
  const env = await setupTestEnv(t);
  const seeded = await runCli(['seed', '--count', '300', '--modern', '20', '--awkward', '--quiet'], { env: env.env });
  t.equal(seeded.code, 0, seeded.stderr);
  t.match(seeded.stdout, /seed: 332 rows and 332 objects added/);
  const again = await runCli(['seed', '--count', '300', '--modern', '20', '--awkward', '--quiet'], { env: env.env });
  t.match(again.stdout, /seed: 0 rows and 0 objects added/, 're-seeding adds nothing');

  // Two more rows share one key.
  await query(env.databaseUrl, `insert into avatars (path) values ('image/avatar-1.png'), ('image/avatar-1.png')`);
  const before = await query<{ id: number; path: string }>(env.databaseUrl, 'select id, path from avatars order by id');
  const legacy = before.filter((r) => r.path.startsWith('image/'));
  t.equal(legacy.length, 314);

  const plan = await runCli(['plan'], { env: env.env });
  t.equal(plan.code, 0, plan.stderr);
  t.match(plan.stdout, /plan: 312 keys added, 0 keys gained referencing rows; 312 keys in the ledger/);
  const shared = await query<{ row_ids: string[]; dst_key: string }>(env.databaseUrl, `select row_ids, dst_key from bucket_migrate.migration_ledger where src_key = 'image/avatar-1.png'`);
  t.equal(shared[0]?.row_ids.length, 3, 'one ledger row per key, with every referencing id');
  const nested = await query<{ dst_key: string }>(env.databaseUrl, `select dst_key from bucket_migrate.migration_ledger where src_key = 'image/nested/image/again.png'`);
  t.equal(nested[0]?.dst_key, 'avatar/nested/image/again.png', 'only the leading prefix is replaced');

  const run = await runCli(['execute', '--threads', '2', '--batch-size', '50'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  t.match(run.stderr, /execute: 312 keys moved/);
  t.same(await ledgerStates(env.databaseUrl), { done: 312 });

  const after = await query<{ id: number; path: string }>(env.databaseUrl, 'select id, path from avatars order by id');
  t.equal(after.filter((r) => r.path.startsWith('image/')).length, 0, 'no row points under image/');
  for (const row of after) {
    const original = before.find((r) => r.id === row.id)!;
    const expectedPath = original.path.startsWith('image/') ? `avatar/${original.path.slice('image/'.length)}` : original.path;
    t.equal(row.path, expectedPath, `row ${row.id} rewritten by prefix only`);
  }
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), [], 'image/ is empty');

  // Every row names an object with the original bytes.
  const names = awkwardNames('image/', 'avatar/');
  let checked = 0;
  for (const row of legacy) {
    const bytes = await getBytes(env.s3client, env.targetBucket, `avatar/${row.path.slice('image/'.length)}`);
    const expected = row.path.endsWith('empty-0-bytes.png') ? Buffer.alloc(0) : avatarPng(row.path);
    if (!bytes || !bytes.equals(expected)) t.fail(`bytes of ${row.path}`);
    else checked++;
  }
  t.equal(checked, legacy.length, 'every moved object has its original bytes');
  t.ok(names.some((n) => Buffer.byteLength(`avatar/${n}`) === 1024), 'a 1,024-byte key was among them');
  const head = await env.s3client.send(new HeadObjectCommand({ Bucket: env.targetBucket, Key: 'avatar/avatar-7.png' }));
  t.equal(head.ContentType, 'image/png', 'content type is kept');

  const second = await runCli(['execute'], { env: env.env });
  t.equal(second.code, 0, 'a second execute exits 0');
  t.match(second.stderr, /execute: 0 keys moved/, 'and changes nothing');
});

t.test('application changes, existing destinations and missing sources', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '8', '--quiet'], { env: env.env })).code, 0);
  // avatar-1: one of its two rows changed by the application after the plan.
  await query(env.databaseUrl, `insert into avatars (path) values ('image/avatar-1.png')`);
  t.equal((await runCli(['plan', '--list'], { env: env.env })).code, 0);
  await query(env.databaseUrl, `update avatars set path = 'avatar/uploaded-new.png' where id = 9`);
  // avatar-2: its only row changed: the key is superseded.
  await query(env.databaseUrl, `update avatars set path = 'avatar/other.png' where path = 'image/avatar-2.png'`);
  // avatar-3: the same object already sits at the destination (a resume).
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-3.png', avatarPng('image/avatar-3.png'), { ContentType: 'image/png' });
  // avatar-4: a different object sits at the destination: a conflict.
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-4.png', Buffer.from('someone else'));
  // avatar-5: the source is gone but the destination holds it.
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-5.png', avatarPng('image/avatar-5.png'), { ContentType: 'image/png' });
  await env.s3client.send(new DeleteObjectCommand({ Bucket: env.sourceBucket, Key: 'image/avatar-5.png' }));
  // avatar-6: the source is gone and so is any destination: missing.
  await env.s3client.send(new DeleteObjectCommand({ Bucket: env.sourceBucket, Key: 'image/avatar-6.png' }));

  const run = await runCli(['execute', '--threads', '1'], { env: env.env });
  t.equal(run.code, 1, 'a conflict makes the exit code 1');
  const states = await query<{ src_key: string; state: string; last_error: string | null; rows_skipped: string[] | null }>(
    env.databaseUrl,
    'select src_key, state, last_error, rows_skipped from bucket_migrate.migration_ledger order by id',
  );
  const state = (key: string) => states.find((s) => s.src_key === `image/${key}`)!;
  t.equal(state('avatar-1.png').state, 'done');
  t.same(state('avatar-1.png').rows_skipped, ['9'], 'the row the application changed is recorded');
  t.equal(state('avatar-2.png').state, 'superseded');
  t.equal(state('avatar-3.png').state, 'done', 'an identical destination counts as copied');
  t.equal(state('avatar-4.png').state, 'conflict');
  t.match(state('avatar-4.png').last_error, /destination exists with different content/);
  t.equal(state('avatar-5.png').state, 'done', 'a missing source with the destination present continues');
  t.equal(state('avatar-6.png').state, 'missing');
  t.equal(state('avatar-7.png').state, 'done');

  const rows = await query<{ id: number; path: string }>(env.databaseUrl, 'select id, path from avatars order by id');
  t.equal(rows.find((r) => r.id === 9)?.path, 'avatar/uploaded-new.png', 'the application change is not clobbered');
  t.equal(rows.find((r) => r.id === 1)?.path, 'avatar/avatar-1.png');
  t.equal(rows.find((r) => r.id === 4)?.path, 'image/avatar-4.png', 'the conflicted row still points at its source');
  t.equal(rows.find((r) => r.id === 6)?.path, 'image/avatar-6.png', 'a missing key is not touched');
  t.same(await getBytes(env.s3client, env.targetBucket, 'avatar/avatar-4.png'), Buffer.from('someone else'), 'never overwritten');
  t.ok(await getBytes(env.s3client, env.sourceBucket, 'image/avatar-4.png'), 'the conflicted source is kept');
  t.ok(await getBytes(env.s3client, env.sourceBucket, 'image/avatar-2.png'), 'a superseded source is not deleted');
  t.ok(await getBytes(env.s3client, env.targetBucket, 'avatar/avatar-2.png'), 'but it was copied');

  const overwrite = await runCli(['execute', '--overwrite'], { env: env.env });
  t.equal(overwrite.code, 1, 'conflict is terminal: --overwrite does not reopen it');

  // The application points avatar-2's row, whose id the ledger already
  // holds, back at the superseded source. A re-plan must take the key back
  // to `pending` (the id is not new, so "new ids" alone would miss it, and
  // the row would name a source that is never moved: found by the soak,
  // seed 5001), and execute then moves the row and deletes the source.
  await query(env.databaseUrl, `update avatars set path = 'image/avatar-2.png' where path = 'avatar/other.png'`);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const replanned = await query<{ state: string }>(env.databaseUrl, `select state from bucket_migrate.migration_ledger where src_key = 'image/avatar-2.png'`);
  t.equal(replanned[0]?.state, 'pending', 'a re-plan takes a superseded key named again by a known row back to pending');
  t.equal((await runCli(['execute'], { env: env.env })).code, 1, 'the conflict still makes it exit 1');
  const finished = await query<{ state: string }>(env.databaseUrl, `select state from bucket_migrate.migration_ledger where src_key = 'image/avatar-2.png'`);
  t.equal(finished[0]?.state, 'done');
  const row2 = await query<{ path: string }>(env.databaseUrl, `select path from avatars where path like '%avatar-2.png'`);
  t.same(row2.map((r) => r.path), ['avatar/avatar-2.png'], 'the row moved onto the copy');
  t.notOk(await objectExists(env.s3client, env.sourceBucket, 'image/avatar-2.png'), 'and the source is gone');
});

t.test('multipart copy above --multipart-threshold keeps bytes and headers', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '2', '--quiet'], { env: env.env })).code, 0);
  const big = Buffer.alloc(12 * 1024 * 1024 + 123);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
  await putObject(env.s3client, env.sourceBucket, 'image/big.png', big, { ContentType: 'image/png', Metadata: { owner: 'u1' }, CacheControl: 'max-age=60' });
  await query(env.databaseUrl, `insert into avatars (path) values ('image/big.png')`);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const run = await runCli(['execute', '--multipart-threshold', '5MiB', '--part-size', '5MiB'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  const copied = await getBytes(env.s3client, env.targetBucket, 'avatar/big.png');
  t.ok(copied?.equals(big), 'multipart copy is byte-identical');
  const head = await env.s3client.send(new HeadObjectCommand({ Bucket: env.targetBucket, Key: 'avatar/big.png' }));
  t.match(head.ETag, /-3"$/, 'copied in 3 parts');
  t.equal(head.ContentType, 'image/png');
  t.equal(head.CacheControl, 'max-age=60');
  t.same(userMetadata(head.Metadata), { owner: 'u1' }, 'the user metadata, plus only the provenance keys');
  t.same(await ledgerStates(env.databaseUrl), { done: 3 });
});

t.test('plan again after new legacy rows appear; two executes at once', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '400', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  await putObject(env.s3client, env.sourceBucket, 'image/late.png', avatarPng('image/late.png'));
  await query(env.databaseUrl, `insert into avatars (path) values ('image/late.png'), ('image/avatar-9.png')`);
  const replan = await runCli(['plan'], { env: env.env });
  t.match(replan.stdout, /plan: 1 keys added, 1 keys gained referencing rows; 401 keys in the ledger/);
  const replan2 = await runCli(['plan'], { env: env.env });
  t.match(replan2.stdout, /plan: 0 keys added, 0 keys gained referencing rows; 401 keys in the ledger/, 'idempotent');

  const args = ['execute', '--threads', '2', '--batch-size', '20', '--quiet'];
  const [a, b] = await Promise.all([runCli(args, { env: env.env }), runCli(args, { env: env.env })]);
  t.equal(a.code, 0, a.stderr);
  t.equal(b.code, 0, b.stderr);
  const moved = [a, b].map((r) => Number(/execute: (\d+) keys moved/.exec(r.stderr)?.[1]));
  t.equal(moved[0]! + moved[1]!, 401, 'each key moved exactly once between the two processes');
  t.ok(moved[0]! > 0 && moved[1]! > 0, `both processes did work (${moved.join(' + ')})`);
  t.same(await ledgerStates(env.databaseUrl), { done: 401 });
  const rows = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from avatars where path like 'image/%'`);
  t.equal(rows[0]?.n, 0);
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), []);
});

t.test('SIGINT stops cleanly with 130 and the next run resumes', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '1500', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const running = spawnCli(['execute', '--threads', '1', '--batch-size', '20', '--concurrency', '4', '--pipeline', '1'], { env: env.env });
  // Interrupt mid-run: once some keys are done.
  for (let i = 0; i < 300; i++) {
    const done = await ledgerStates(env.databaseUrl);
    if ((done.done ?? 0) > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  running.child.kill('SIGINT');
  const stopped = await running.result;
  t.equal(stopped.code, 130, stopped.stderr);
  t.match(stopped.stderr, /run the same execute command again to resume/);
  const leased = await query<{ n: number }>(env.databaseUrl, `select count(*)::int as n from bucket_migrate.migration_ledger where locked_by is not null`);
  t.equal(leased[0]?.n, 0, 'no lease is left behind');
  const states = await ledgerStates(env.databaseUrl);
  t.ok((states.pending ?? 0) > 0, 'it stopped before the end');
  const runs = await query<{ status: string; exit_code: number }>(env.databaseUrl, `select status, exit_code from bucket_migrate.runs where command = 'execute'`);
  t.same(runs, [{ status: 'interrupted', exit_code: 130 }]);
  const resumed = await runCli(['execute', '--threads', '2'], { env: env.env });
  t.equal(resumed.code, 0, resumed.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 1500 });
});
