/**
 * `npm run demo`: the whole job on local services. Starts Postgres (embedded
 * unless DATABASE_URL is set) and MinIO (unless S3_ENDPOINT is set), seeds
 * 10,000 legacy and 1,000 modern avatars, runs plan (which installs the
 * delete guard and prints it) and execute, then checks
 * the end state itself: every row names an existing object under the target
 * prefix, and the source prefix is empty.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { createDatabase, startPostgres, withDatabase } from './lib/local-postgres.js';
import { startS3 } from './lib/local-minio.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const LEGACY = Number(process.env.DEMO_COUNT ?? 10_000);
const MODERN = Number(process.env.DEMO_MODERN ?? 1_000);

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  say(`\n$ bucket-migrate ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

async function listAll(s3: S3Client, bucket: string, prefix: string): Promise<Set<string>> {
  const keys = new Set<string>();
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.add(o.Key!);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

async function main(): Promise<number> {
  const log = (line: string) => say(`# ${line}`);
  const configuredDb = process.env.DATABASE_URL;
  const postgres = await startPostgres({ log, env: { ...process.env, BM_FORCE_EMBEDDED_PG: configuredDb ? '' : '1' } });
  const s3server = await startS3({ log });
  let databaseUrl = postgres.url;
  if (!configuredDb) {
    const name = `bucket_migrate_demo_${Date.now()}`;
    await createDatabase(postgres.url, name);
    databaseUrl = withDatabase(postgres.url, name);
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    S3_ENDPOINT: s3server.endpoint,
    AWS_ACCESS_KEY_ID: s3server.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3server.secretAccessKey,
    AWS_REGION: s3server.region,
  };
  const source = { bucket: env.SOURCE_BUCKET ?? 'legacy-s3', prefix: env.SOURCE_PREFIX ?? 'image/' };
  const target = { bucket: env.TARGET_BUCKET ?? 'production-s3', prefix: env.TARGET_PREFIX ?? 'avatar/' };
  const s3 = new S3Client({
    endpoint: s3server.endpoint,
    region: s3server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3server.accessKeyId, secretAccessKey: s3server.secretAccessKey },
  });
  try {
    for (const args of [
      ['seed', '--count', String(LEGACY), '--modern', String(MODERN), '--quiet'],
      ['plan', '--list'],
      ['execute'],
    ]) {
      if (args[0] === 'plan') {
        say('\n# plan first installs the delete guard (a trigger on the table, when the role may create one) and says which');
        say('# guard the delete phase will use; execute refuses to delete sources without one (see README, Safety model)');
      }
      const code = await run(args, env);
      if (code !== 0) {
        say(`\ndemo: bucket-migrate ${args[0]} exited ${code}`);
        return 1;
      }
    }
    const validate = await run(['validate'], env);

    say('\n# checking the end state directly');
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    const rows = (await client.query<{ path: string }>('select path from avatars')).rows;
    await client.end();
    const targets = await listAll(s3, target.bucket, target.prefix);
    const sources = await listAll(s3, source.bucket, source.prefix);
    const outside = rows.filter((r) => !r.path.startsWith(target.prefix)).length;
    const dangling = rows.filter((r) => !targets.has(r.path)).length;
    say(`rows: ${rows.length}; under ${target.prefix}: ${rows.length - outside}; naming a missing object: ${dangling}`);
    say(`objects: ${targets.size} under s3://${target.bucket}/${target.prefix}, ${sources.size} left under s3://${source.bucket}/${source.prefix}`);
    const ok = outside === 0 && dangling === 0 && sources.size === 0 && rows.length === LEGACY + MODERN && validate === 0;
    say(ok ? '\ndemo: OK, every row points at an existing object under the target prefix, and the source prefix is empty' : '\ndemo: FAILED');
    return ok ? 0 : 1;
  } finally {
    s3.destroy();
    await s3server.stop();
    await postgres.stop();
  }
}

// A library that emits an 'error' nobody listens to (a failed spawn) must end the demo with one line too, not a stack trace.
process.on('uncaughtException', (err) => {
  say(`demo: ${err instanceof Error ? err.message : String(err)} (set DATABASE_URL to a Postgres server to skip the embedded one)`);
  process.exit(1);
});

process.exitCode = await main().catch((err: unknown) => {
  say(`demo: ${err instanceof Error ? err.message : String(err)}`);
  return 1;
});
