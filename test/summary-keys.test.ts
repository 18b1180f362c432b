/**
 * `execute` names its `missing` and `conflict` keys (the first ten of each)
 * and says where to see them all, instead of only counting them (issue 15,
 * item 6).
 */
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { listKeys, putObject, setupTestEnv } from './helpers/services.js';

t.test('the summary names missing and conflict keys', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '16', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const sources = (await listKeys(env.s3client, env.sourceBucket, 'image/')).sort();
  // 12 sources gone (missing), one destination already taken by another object (conflict).
  const gone = sources.slice(0, 12);
  for (const key of gone) await env.s3client.send(new DeleteObjectCommand({ Bucket: env.sourceBucket, Key: key }));
  const taken = sources[14]!;
  await putObject(env.s3client, env.targetBucket, taken.replace(/^image\//, 'avatar/'), 'someone else');

  const run = await runCli(['execute', '--threads', '1', '--quiet'], { env: env.env });
  t.equal(run.code, 1, `a conflict fails the run\n${run.stderr}`);
  t.match(run.stderr, /^12 keys missing \(the source object does not exist\), the first 10:$/m);
  const named = gone.filter((key) => new RegExp(`^  ${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm').test(run.stderr));
  t.equal(named.length, 10, 'ten of them are named');
  t.match(run.stderr, /all of them: bucket-migrate report --json \| jq '\.exceptions\.missing', or select src_key, dst_key, last_error from bucket_migrate\.failures where state = 'missing'/);
  t.match(run.stderr, /^1 keys conflict \(a different object is already at the destination\):$/m);
  t.match(run.stderr, new RegExp(`^  ${taken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'), 'the conflict key is named');
});
