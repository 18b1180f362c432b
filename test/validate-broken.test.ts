/**
 * validate tells broken from unfinished: a row naming an object that does
 * not exist is reported as exactly that, "row <id> names s3://bucket/key,
 * which does not exist", with the row id and the object, for rows under the
 * target prefix and under the source prefix (a legacy row whose source is
 * gone is broken, not unfinished), in every spelling a row may use (a
 * leading '/', s3://bucket/key, an https URL). A legacy row whose object is
 * still there is unfinished, and said so.
 */
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { query, queryPastGuard } from './helpers/db.js';
import { objectExists, putObject, setupTestEnv } from './helpers/services.js';
import { plannedTestEnv } from './helpers/planned-env.js';

interface Finding {
  key: string;
  rowId?: string;
  missingObject?: string;
  reason: string;
  state?: string | null;
}
interface Check {
  ok: boolean;
  failureCount: number;
  failures: Finding[];
  details: Record<string, unknown>;
}

t.test('rows naming missing objects are named as broken, in every spelling', async (t) => {
  const env = await plannedTestEnv(t, 10);
  const cli = (args: string[]) => runCli(args, { env: env.env, timeoutMs: 120_000 });
  const run = await cli(['execute', '--quiet']);
  t.equal(run.code, 0, run.stderr);
  t.equal((await cli(['validate'])).code, 0, 'a clean migration validates');

  const src = env.sourceBucket;
  const dst = env.targetBucket;
  const insert = async (path: string) =>
    (await queryPastGuard<{ id: string }>(env.databaseUrl, 'insert into avatars (path) values ($1) returning id::text', [path]))[0]!.id;
  // Target rows: two spellings of existing objects (fine), two of missing ones (broken).
  await insert('/avatar/avatar-1.png');
  await insert(`https://s3.example.test/${dst}/avatar/avatar-2.png`);
  const goneTarget = await insert(`s3://${dst}/avatar/nope.png`);
  const goneTargetSlash = await insert('/avatar/nope-2.png');
  // Legacy rows whose source was deleted by the move: broken, whatever the spelling.
  const plain = await insert('image/avatar-3.png');
  const slash = await insert('/image/avatar-4.png');
  const uri = await insert(`s3://${src}/image/avatar-5.png`);
  const virtualHosted = await insert(`https://${src}.s3.example.test/image/avatar-6.png`);
  // A legacy row whose object exists and whose key is planned, not moved yet: unfinished.
  await putObject(env.s3client, src, 'image/later.png', 'later');
  const later = await insert('image/later.png');
  t.equal((await cli(['plan'])).code, 0);

  const text = await cli(['validate']);
  t.equal(text.code, 1, 'validate fails');
  for (const [id, object, spelled] of [
    [goneTarget, `s3://${dst}/avatar/nope.png`, ` (spelled "s3://${dst}/avatar/nope.png")`],
    [goneTargetSlash, `s3://${dst}/avatar/nope-2.png`, ' (spelled "/avatar/nope-2.png")'],
    [plain, `s3://${src}/image/avatar-3.png`, ''],
    [slash, `s3://${src}/image/avatar-4.png`, ' (spelled "/image/avatar-4.png")'],
    [uri, `s3://${src}/image/avatar-5.png`, ` (spelled "s3://${src}/image/avatar-5.png")`],
    [virtualHosted, `s3://${src}/image/avatar-6.png`, ` (spelled "https://${src}.s3.example.test/image/avatar-6.png")`],
  ] as const) {
    t.match(text.stdout, `    row ${id} names ${object}, which does not exist${spelled}`, `row ${id} is named broken, with its object`);
  }
  t.match(text.stdout, `row ${later} image/later.png: key is still pending: the migration has not finished`, 'unfinished is not broken');

  const json = await cli(['validate', '--json']);
  const result = JSON.parse(json.stdout) as { checks: Record<string, Check> };
  const target = result.checks.targetObjects!;
  t.equal(target.failureCount, 2, 'two broken target rows, the other spellings of existing objects pass');
  t.same(
    target.failures.map((f) => [f.rowId, f.missingObject]).sort(),
    [
      [goneTarget, `s3://${dst}/avatar/nope.png`],
      [goneTargetSlash, `s3://${dst}/avatar/nope-2.png`],
    ].sort(),
  );
  const legacy = result.checks.legacyRows!;
  t.equal(legacy.failureCount, 5);
  t.match(legacy.details, { brokenRows: 4, otherSpellings: 3, legacyRows: 5 });
  const broken = legacy.failures.filter((f) => f.missingObject);
  t.same(broken.map((f) => f.rowId).sort(), [plain, slash, uri, virtualHosted].sort(), 'the four rows whose source is gone are broken');
  t.match(
    legacy.failures.find((f) => f.rowId === later),
    { key: 'image/later.png', state: 'pending', reason: /still pending/ },
  );
  t.notOk(legacy.failures.find((f) => f.rowId === later)?.missingObject, 'the unfinished row is not broken');
});

t.test('a superseded key: a row naming it again exactly is unfinished until a re-plan; one in another spelling is a known exception', async (t) => {
  const env = await setupTestEnv(t);
  const cli = (args: string[]) => runCli(args, { env: env.env, timeoutMs: 120_000 });
  t.equal((await cli(['seed', '--count', '4', '--quiet'])).code, 0);
  t.equal((await cli(['plan'])).code, 0);
  // After the plan, the application points avatar-1's and avatar-2's rows elsewhere: both keys end superseded.
  await putObject(env.s3client, env.targetBucket, 'avatar/elsewhere.png', 'elsewhere');
  await query(env.databaseUrl, `update avatars set path = 'avatar/elsewhere.png' where path in ('image/avatar-1.png', 'image/avatar-2.png')`);
  const run = await cli(['execute', '--quiet']);
  t.equal(run.code, 0, run.stderr);
  const states = await query<{ src_key: string; state: string }>(env.databaseUrl, `select src_key, state from bucket_migrate.migration_ledger order by src_key`);
  t.same(states.filter((s) => s.state === 'superseded').map((s) => s.src_key), ['image/avatar-1.png', 'image/avatar-2.png']);
  // Then it names avatar-1 again in another spelling, and avatar-2 exactly (the soak's seed 5001 did both).
  const spelled = (await query<{ id: string }>(env.databaseUrl, `insert into avatars (path) values ('/image/avatar-1.png') returning id::text`))[0]!.id;
  const exact = (await query<{ id: string }>(env.databaseUrl, `update avatars set path = 'image/avatar-2.png' where id = (select row_ids[1]::int from bucket_migrate.migration_ledger where src_key = 'image/avatar-2.png') returning id::text`))[0]!.id;

  const before = await cli(['validate', '--json', '--checks', 'legacy-rows']);
  t.equal(before.code, 1, 'the exactly-named superseded key fails validate');
  const check = (JSON.parse(before.stdout) as { checks: Record<string, Check & { exceptions: Finding[] }> }).checks.legacyRows!;
  t.same(check.failures.map((f) => f.rowId), [exact], 'only the exact row fails');
  t.match(check.failures[0]!.reason, /superseded\): re-run plan/);
  t.match(check.exceptions.find((f) => f.rowId === spelled)?.reason, /known exception: row names the key as \/image\/avatar-1\.png, a spelling the tool never rewrites; the key is superseded, so its source is kept/);

  // A re-plan takes avatar-2 back to pending; execute moves its row.
  t.equal((await cli(['plan'])).code, 0);
  const again = await cli(['execute', '--quiet']);
  t.equal(again.code, 0, again.stderr);
  const after = await cli(['validate']);
  t.equal(after.code, 0, `validate passes, the spelled row a known exception:\n${after.stdout}`);
  t.not((await cli(['validate', '--strict'])).code, 0, '--strict fails on it');
  const pathOf = async (id: string) => (await query<{ path: string }>(env.databaseUrl, 'select path from avatars where id = $1', [id]))[0]?.path;
  t.equal(await pathOf(exact), 'avatar/avatar-2.png', 'the row the ledger already knew moved onto the copy');
  t.equal(await pathOf(spelled), '/image/avatar-1.png', 'the spelled row is left as it is');
  t.ok(await objectExists(env.s3client, env.sourceBucket, 'image/avatar-1.png'), 'and the source it names is kept');
});
