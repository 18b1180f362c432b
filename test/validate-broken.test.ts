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
import { putObject, setupTestEnv } from './helpers/services.js';

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
  const env = await setupTestEnv(t);
  const cli = (args: string[]) => runCli(args, { env: env.env, timeoutMs: 120_000 });
  t.equal((await cli(['seed', '--count', '10', '--quiet'])).code, 0);
  t.equal((await cli(['plan'])).code, 0);
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
