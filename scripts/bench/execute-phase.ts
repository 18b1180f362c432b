/**
 * One `plan` + `execute` run, each a whole CLI process, and everything
 * measured around it: peak RSS and CPU of the client, MinIO's and the
 * Postgres backends' CPU, transactions, table and ledger updates (HOT or
 * not), WAL, and execute's own request counts. It checks that every key is
 * done and every object moved, then drops its ledger.
 */
import { query, verifyMoved, type BenchContext, type Location } from './bench-context.js';
import { mustSucceed } from './children.js';
import { flagValue } from './options.js';
import { DEFAULT_DEST_CHECK } from '../../src/copy/copy-config.js';
import { median, type ExecuteRun } from './report.js';

/** What one run is: its label, its flags, and where the objects go. */
export interface ExecuteSpec {
  label: string;
  variant: ExecuteRun['variant'];
  threads: number;
  repetition: number;
  /** execute flags besides --threads and the bench's --execute-args. */
  extra?: string[];
  /** Default: the bench's own environment. */
  env?: NodeJS.ProcessEnv;
  /** Default: --count. */
  count?: number;
  /** Default: the shuttle's two ends (and the shuttle flips after the run). */
  source?: Location;
  target?: Location;
  /** node flags for execute (--cpu-prof). */
  nodeArgs?: string[];
  /** Default: the bench's --plan-args. */
  planArgs?: string[];
  /** Default: a fresh one. */
  schema?: string;
}

/** Runs plan + execute as `spec` says, and measures it. */
export async function runExecute(ctx: BenchContext, spec: ExecuteSpec): Promise<ExecuteRun> {
  const { options, dbUrl } = ctx;
  const extra = spec.extra ?? [];
  const env = spec.env ?? ctx.base;
  const count = spec.count ?? options.count;
  const source = spec.source ?? ctx.shuttle.here;
  const target = spec.target ?? ctx.shuttle.there;
  const planArgs = spec.planArgs ?? options.planArgs;
  const schema = spec.schema ?? ctx.nextLedgerSchema();
  const runEnv = {
    ...env,
    SOURCE_BUCKET: source.bucket,
    SOURCE_PREFIX: source.prefix,
    TARGET_BUCKET: target.bucket,
    TARGET_PREFIX: target.prefix,
    LEDGER_SCHEMA: schema,
  };
  const plan = await ctx.children.runCli(['plan', ...planArgs], runEnv);
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
  const cpu0 = ctx.cpu.minio();
  ctx.cpu.sampler?.start();
  const args = ['execute', '--threads', String(spec.threads), '--quiet', ...options.executeArgs, ...extra];
  const executed = await ctx.children.runCli(args, runEnv, true, spec.nodeArgs ?? []);
  const pgCpu = ctx.cpu.sampler?.stop();
  const cpu1 = ctx.cpu.minio();
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
  if (done !== count) throw new Error(`${spec.label}: ${done} of ${count} keys done (${JSON.stringify(states)})`);
  const runRow = await query<{ counts: Record<string, number>; config: Record<string, unknown> }>(
    dbUrl,
    `select counts, config from "${schema}".runs where command = 'execute' order by id desc limit 1`,
  );
  const counts = runRow[0]?.counts ?? {};
  const settings = runRow[0]?.config ?? {};
  await verifyMoved(ctx, spec.label, source, target, count);
  if (source === ctx.shuttle.here) ctx.shuttle.flip();
  await query(dbUrl, `drop schema "${schema}" cascade`);
  const batchSize = Number(settings.batchSize ?? flagValue([...options.executeArgs, ...extra], '--batch-size') ?? NaN);
  const seconds = plan.seconds + executed.seconds;
  const run: ExecuteRun = {
    label: spec.label,
    variant: spec.variant,
    repetition: spec.repetition,
    threads: spec.threads,
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
    minioCpuSeconds: cpu0 !== undefined && cpu1 !== undefined ? ctx.cpu.busy(cpu1 - cpu0, executed.seconds) : undefined,
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
  ctx.log(
    `${spec.label}: ${run.objectsPerSecond.toFixed(0)} objects/s (plan ${plan.seconds.toFixed(1)} s + execute ${executed.seconds.toFixed(1)} s), ` +
      `peak RSS ${((run.maxRssKiB ?? 0) / 1024).toFixed(0)} MiB`,
  );
  return run;
}

/** The --threads value with the best median rate in the --threads sweep so far. */
export function bestThreads(executes: ExecuteRun[], candidates: number[]): number {
  const byThreads = new Map<number, number[]>();
  for (const r of executes.filter((r) => r.variant === 'threads')) byThreads.set(r.threads, [...(byThreads.get(r.threads) ?? []), r.objectsPerSecond]);
  let best = candidates[0]!;
  let bestRate = -1;
  for (const [threads, rates] of byThreads) {
    const m = median(rates);
    if (m > bestRate) [best, bestRate] = [threads, m];
  }
  return best;
}
