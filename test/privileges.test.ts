/**
 * Least privilege, proven: a full migration as a Postgres role and a MinIO
 * user holding exactly the rights in docs/PRIVILEGES.md, read from that file.
 * A privilege the tool needs that the document leaves out fails this test.
 */
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import t, { type Test } from 'tap';
import { connectMc, type Mc } from '../scripts/lib/local-mc.js';
import { runCli } from './helpers/cli.js';
import { getServices, listKeys, setupTestEnv, type TestEnv } from './helpers/services.js';
import { assertMigrated, captureBaseline, query } from './support/end-state.js';

const DOC = fileURLToPath(new URL('../../docs/PRIVILEGES.md', import.meta.url));

/** The fenced block right after `<!-- privileges:<name> -->`. */
function block(doc: string, name: string): string {
  const match = new RegExp(`<!-- privileges:${name} -->\\s*\`\`\`\\w*\\n([\\s\\S]*?)\`\`\``).exec(doc);
  if (!match) throw new Error(`docs/PRIVILEGES.md has no privileges:${name} block`);
  return match[1]!;
}

/**
 * A MinIO user with `policy` (a JSON document) as its only policy, and
 * fresh random credentials; user and policy are removed at teardown.
 */
async function s3UserWithPolicy(t: Test, mc: Mc, user: string, policyName: string, policy: string): Promise<{ user: string; secret: string }> {
  const policyFile = path.join(await fsp.mkdtemp(path.join(os.tmpdir(), 'bm-policy-')), 'policy.json');
  await fsp.writeFile(policyFile, policy);
  const secret = randomBytes(20).toString('hex');
  await mc.run('admin', 'policy', 'create', mc.alias, policyName, policyFile);
  await mc.run('admin', 'user', 'add', mc.alias, user, secret);
  await mc.run('admin', 'policy', 'attach', mc.alias, policyName, '--user', user);
  t.teardown(async () => {
    await mc.run('admin', 'user', 'remove', mc.alias, user).catch(() => undefined);
    await mc.run('admin', 'policy', 'remove', mc.alias, policyName).catch(() => undefined);
    await fsp.rm(path.dirname(policyFile), { recursive: true, force: true });
  });
  return { user, secret };
}

function withCredentials(url: string, user: string): string {
  const parsed = new URL(url);
  parsed.username = user;
  parsed.password = '';
  return parsed.toString();
}

/**
 * Creates `role` with exactly the documented Postgres grants (nothing from
 * PUBLIC's defaults), dropped at teardown.
 */
async function grantDocumented(t: Test, env: TestEnv, role: string): Promise<void> {
  const { postgres } = await getServices();
  // The role owns the ledger: its database goes first.
  t.teardown(async () => {
    await env.teardown();
    await query(postgres.url, `drop role if exists ${role}`).catch(() => undefined);
  });
  const grants = block(readFileSync(DOC, 'utf8'), 'postgres').replace(/\bmigrator\b/g, role).replace(/\bappdb\b/g, env.dbName);
  await query(env.databaseUrl, `revoke all on database "${env.dbName}" from public; revoke all on schema public from public;`);
  await query(env.databaseUrl, grants);
}

t.test('a full migration with exactly the documented privileges', async (t) => {
  const env = await setupTestEnv(t);
  const suffix = randomBytes(4).toString('hex');
  const role = `bm_mig_${suffix}`;
  // Setup as the admin: the table, rows and objects the application owns.
  t.equal((await runCli(['seed', '--count', '40', '--awkward', '--quiet'], { env: env.env })).code, 0);
  const baseline = await captureBaseline(env);
  const doc = readFileSync(DOC, 'utf8');
  await grantDocumented(t, env, role);
  const attrs = await query<{ rolsuper: boolean; rolcreatedb: boolean; rolcreaterole: boolean; rolbypassrls: boolean }>(
    env.databaseUrl,
    'select rolsuper, rolcreatedb, rolcreaterole, rolbypassrls from pg_roles where rolname = $1',
    [role],
  );
  t.same(attrs, [{ rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolbypassrls: false }], 'an ordinary role');

  // MinIO: a user with exactly the documented policy, through the admin API (mc).
  const mc = await connectMc(env.s3);
  t.teardown(() => mc.close());
  const policy = block(doc, 's3').replace(/legacy-s3/g, env.sourceBucket).replace(/production-s3/g, env.targetBucket);
  JSON.parse(policy);
  const { user, secret } = await s3UserWithPolicy(t, mc, `bmmig${suffix}`, `bm-migrate-${suffix}`, policy);

  const restricted = {
    ...env.env,
    DATABASE_URL: withCredentials(env.databaseUrl, role),
    AWS_ACCESS_KEY_ID: user,
    AWS_SECRET_ACCESS_KEY: secret,
  };

  // The restrictions are real: outside the documented rights, it is refused.
  const client = new S3Client({
    endpoint: env.s3.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: user, secretAccessKey: secret },
  });
  t.teardown(() => client.destroy());
  const denied = await client
    .send(new PutObjectCommand({ Bucket: env.sourceBucket, Key: 'image/new.png', Body: 'x' }))
    .then(() => 'allowed', (e: { name?: string }) => e.name);
  t.equal(denied, 'AccessDenied', 'the user cannot write to the source');
  const outside = await client
    .send(new PutObjectCommand({ Bucket: env.targetBucket, Key: 'elsewhere/x.png', Body: 'x' }))
    .then(() => 'allowed', (e: { name?: string }) => e.name);
  t.equal(outside, 'AccessDenied', 'nor outside the target prefix');
  const idUpdate = await query(restricted.DATABASE_URL, 'update avatars set id = id where false').then(
    () => 'allowed',
    (e: Error) => e.message,
  );
  t.match(idUpdate, /permission denied/, 'the role cannot write other columns');

  // The whole migration, as the restricted role and user.
  for (const args of [['plan', '--list'], ['execute', '--threads', '2', '--quiet'], ['report'], ['validate']]) {
    const result = await runCli(args, { env: restricted, timeoutMs: 120_000 });
    t.equal(result.code, 0, `${args.join(' ')} with the documented privileges\n${result.stdout}\n${result.stderr}`);
    if (args[0] === 'execute') {
      // s3:GetEncryptionConfiguration is in the policy: the run may clone (no note, no HEAD per key).
      t.notMatch(result.stderr, /could not read the default encryption/, 'execute read the source bucket\'s default encryption');
      t.match(result.stderr, /S3 requests \((0|1)\.\d\d per key\)/, 'and cloned: one request per key or so');
    }
  }
  await assertMigrated(t, env, baseline, { env: restricted });
});

t.test('a privilege missing mid-run stops execute with one line naming the fix, and loses nothing', async (t) => {
  const env = await setupTestEnv(t);
  const role = `bm_short_${randomBytes(4).toString('hex')}`;
  t.equal((await runCli(['seed', '--count', '30', '--quiet'], { env: env.env })).code, 0);
  await grantDocumented(t, env, role);
  const restricted = { ...env.env, DATABASE_URL: withCredentials(env.databaseUrl, role) };
  t.equal((await runCli(['plan'], { env: restricted })).code, 0, 'plan needs no UPDATE');
  // The one right the commit needs, taken away.
  await query(env.databaseUrl, `revoke update on avatars from ${role}`);
  // Two lanes with a batch each in hand when the first commit is refused.
  const run = await runCli(['execute', '--threads', '1', '--pipeline', '2', '--batch-size', '10', '--quiet'], { env: restricted });
  t.equal(run.code, 2, `a missing grant is a configuration error: exit 2\n${run.stderr}`);
  const leased = await query<{ n: number }>(env.databaseUrl, 'select count(*)::int as n from bucket_migrate.migration_ledger where locked_by is not null');
  t.equal(leased[0]!.n, 0, 'every lane gave its batch back: no key waits for a lease to expire');
  t.match(run.stderr, new RegExp(`stopped: the database refused: permission denied for table avatars; run GRANT UPDATE \\(path\\) ON TABLE avatars TO ${role} \\(docs/PRIVILEGES\\.md\\)`));
  t.equal(run.stderr.split('\n').filter((l) => /^bucket-migrate:/.test(l)).length, 1, 'one error line');
  t.notMatch(run.stderr, /unexpected|    at /, 'no stack trace, nothing unexplained');
  const rows = await query<{ path: string }>(env.databaseUrl, 'select path from avatars');
  t.ok(rows.every((r) => r.path.startsWith('image/')), 'no row changed');
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 30, 'no source deleted');
  // Granted again, the same command finishes the job.
  await query(env.databaseUrl, `grant update (path) on avatars to ${role}`);
  const again = await runCli(['execute', '--threads', '1', '--quiet'], { env: restricted });
  t.equal(again.code, 0, again.stderr);
  t.same(await listKeys(env.s3client, env.sourceBucket, 'image/'), [], 'every source moved');
});

t.test('an S3 permission missing mid-run: exit 2, one line naming the action to grant', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '20', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const suffix = randomBytes(4).toString('hex');
  const mc = await connectMc(env.s3);
  t.teardown(() => mc.close());
  // The documented policy without s3:PutObject on the target: every copy is refused.
  const policy = JSON.parse(block(readFileSync(DOC, 'utf8'), 's3').replace(/legacy-s3/g, env.sourceBucket).replace(/production-s3/g, env.targetBucket)) as {
    Statement: Array<{ Action: string[] }>;
  };
  for (const statement of policy.Statement) statement.Action = statement.Action.filter((a) => a !== 's3:PutObject');
  const { user, secret } = await s3UserWithPolicy(t, mc, `bmnoput${suffix}`, `bm-noput-${suffix}`, JSON.stringify(policy));
  const run = await runCli(['execute', '--threads', '1', '--quiet'], { env: { ...env.env, AWS_ACCESS_KEY_ID: user, AWS_SECRET_ACCESS_KEY: secret } });
  t.equal(run.code, 2, `a missing S3 permission is a configuration error: exit 2\n${run.stderr}`);
  const errors = run.stderr.split('\n').filter((l) => /^bucket-migrate:/.test(l));
  t.equal(errors.length, 1, `one error line\n${run.stderr}`);
  t.match(errors[0], /AccessDenied.*grant .*s3:PutObject .*on arn:aws:s3:::dst-[^/]+\/avatar\/\*.*docs\/PRIVILEGES\.md/);
  t.notMatch(run.stderr, /unexpected|    at /, 'no stack trace');
  t.equal((await listKeys(env.s3client, env.sourceBucket, 'image/')).length, 20, 'no source deleted');
});
