import os from 'node:os';
import { Piscina } from 'piscina';
import { describeConfig } from '../config/config.js';
import { createDatabase, checkConnection } from '../db/database.js';
import { migrateLedger } from '../db/migrate.js';
import { withDbRetry } from '../db/retry.js';
import { inspectTable } from '../db/table-info.js';
import { UsageError } from '../errors.js';
import { chooseGuard, describeGuard, guardStatus, type GuardMode } from '../guard/guard.js';
import { releaseLeasesOfGoneRuns, watchGoneRuns } from '../ledger/gone-runs.js';
import { bindLedgerConfig, ledgerExists } from '../ledger/ledger-config.js';
import { countStates, finishRun, runOutcome, startRun } from '../ledger/runs.js';
import { finishSuperseded, requeueFailed } from '../ledger/state-machine.js';
import { addLogFields } from '../util/json-log.js';
import { checkConditionalWrites, conditionalNote } from './check-conditional.js';
import type { ConditionalSupport } from '../copy/probe-conditional.js';
import { chooseCopyMode, type CopyModeChoice } from '../copy/copy-mode.js';
import { startMetrics } from '../telemetry/metrics.js';
import { printRefusedDeletes } from './refused-deletes.js';
import { createS3Client } from '../s3/client.js';
import { SharedRateBucket } from '../s3/rate-bucket.js';
import { checkLocation } from '../s3/preflight.js';
import { formatDuration, formatRate, out } from '../util/output.js';
import { handleStopSignals } from '../util/stop-signals.js';
import { createCounters, read, write } from '../telemetry/counters.js';
import { dryRun, dryRunTotals, printDryRun, printDryRunTotals } from './dry-run.js';
import type { ExecuteConfig } from './execute-config.js';
import { explainDbDenied, explainS3Denied, isS3AccessDenied } from './privilege-hint.js';
import { stageWork, startProgress, type ProgressOptions } from './progress.js';
import { stageStates } from './stage.js';
import { attachTelemetry, createTelemetry, instrumentS3Client, readTelemetry } from '../telemetry/telemetry.js';
import { printUnmovedKeys } from './unmoved-keys.js';
import type { WorkerResult, WorkerTask } from './worker-loop.js';

/** Options of one `execute` run beyond the shared configuration. */
export interface ExecuteRunOptions {
  retryFailed: boolean;
  /** Put superseded keys back in db_updated before starting (`--finish-superseded`), so their sources are deleted under the guard. */
  finishSuperseded?: boolean;
  /** Print the next N actions instead of running (0: run). */
  dryRun?: number;
  progress: ProgressOptions;
  /** Serve Prometheus metrics on this port while the run lasts (`--metrics-port`). */
  metricsPort?: number;
  /** The address it listens on (`--metrics-host`, default loopback). */
  metricsHost?: string;
}

const WORKER = new URL('../../workers/migrate-worker.js', import.meta.url);

/**
 * Runs the migration: checks everything it can before touching anything,
 * then lets `--threads` worker threads drain the ledger. Returns the exit
 * code: 0 when every key is settled well, 1 when any is failed, archived or in
 * conflict (or a fatal error stopped the run), 130/143 when interrupted.
 */
export async function execute(asked: ExecuteConfig, options: ExecuteRunOptions): Promise<number> {
  // `copyMode` is decided below, once, from what the source bucket allows.
  let config = asked;
  const url = config.migrate.databaseUrl!;
  const schema = config.migrate.ledgerSchema;
  const db = createDatabase({ url, max: 2 });
  const counters = createCounters();
  // Request-level figures of every thread (metrics, stalls); the main thread's own requests count too.
  const telemetry = createTelemetry();
  attachTelemetry(telemetry);
  // Installed first: a Ctrl-C during the checks below must not kill the
  // process halfway either.
  const stop = handleStopSignals('the batches in hand', 'run execute again to resume', () => write(counters, 'stop', 1));
  try {
    await checkConnection(db, url);
    // Every statement of the main thread rides out a dropped connection
    // (failover, pg_terminate_backend) like the workers' do: each is
    // idempotent or guarded, so running it again is harmless.
    if (!(await withDbRetry(() => ledgerExists(db, schema)))) {
      throw new UsageError(`there is no ledger in schema ${schema}: run bucket-migrate plan first`);
    }
    await withDbRetry(() => migrateLedger(db, schema));
    await withDbRetry(() => bindLedgerConfig(db, config.migrate, 'use'));
    const table = await withDbRetry(() => inspectTable(db, config.migrate.table, config.migrate.idColumn, config.migrate.pathColumn));
    // The delete guard, decided before anything is touched: without one the
    // delete phase is refused (exit 2) unless --delete-unguarded.
    const guarding = await withDbRetry(() => guardStatus(db, config.migrate, table.hasPathIndex));
    const guard: GuardMode =
      config.stage === 'keep-source' || options.dryRun
        ? guarding.triggerCovered ? 'trigger' : guarding.hasPathIndex ? 'index' : 'none'
        : chooseGuard(guarding, config.migrate, config.stage === 'delete-only' ? 'execute --delete-only' : 'execute', config.deleteUnguarded === true);
    const s3 = createS3Client(config.migrate.s3, { maxSockets: 8 });
    instrumentS3Client(s3);
    let conditional: ConditionalSupport | undefined;
    let copyMode: CopyModeChoice = { mode: 'replace' };
    try {
      await checkLocation(s3, config.migrate.source, 'SOURCE_BUCKET');
      await checkLocation(s3, config.migrate.target, 'TARGET_BUCKET');
      if (options.dryRun) {
        printDryRun(config.migrate, await dryRun(db, s3, config.migrate, options.dryRun));
        printDryRunTotals(config, await dryRunTotals(db, config));
        return 0;
      }
      conditional = await checkConditionalWrites(s3, config);
      copyMode = config.stage === 'delete-only' ? { mode: 'replace' } : await chooseCopyMode(s3, config);
      config = { ...config, copyMode: copyMode.mode };
    } finally {
      s3.destroy();
    }
    // Before the run is recorded: a port in use must not leave a run 'running'.
    const metrics = options.metricsPort === undefined ? undefined : await startMetrics({ port: options.metricsPort, host: options.metricsHost ?? '127.0.0.1', counters, telemetry, command: 'execute', stage: config.stage ?? 'full' });
    // Refused (exit 2) while a revert runs on this ledger; nothing is changed before.
    const runId = await withDbRetry(() =>
      startRun(db, schema, 'execute', { ...describeConfig(config.migrate), ...executeSettings(config), ifNoneMatch: conditional }, config.processId),
    ).catch(async (err: unknown) => {
      await metrics?.stop();
      throw err;
    });
    metrics?.setRunId(runId);
    if (options.retryFailed) out.info(`re-queued ${await withDbRetry(() => requeueFailed({ db, schema }))} failed or archived keys`);
    if (options.finishSuperseded) {
      const finishing = await withDbRetry(() => finishSuperseded({ db, schema }));
      out.info(`finishing ${finishing} superseded keys: each source is deleted once its copy is checked and no row names it (rows naming it by then move onto the copy)`);
    }
    // Leases of a process killed on this host are released now, not waited out.
    await withDbRetry(() => releaseLeasesOfGoneRuns(db, schema));
    addLogFields({ run_id: runId });
    // After every check that can refuse the run: a usage error stays one line.
    out.info(config.stage === 'keep-source' ? `${describeGuard(guard, config.migrate)}; --keep-source deletes nothing` : describeGuard(guard, config.migrate));
    if (conditional) out.info(conditionalNote(conditional));
    if (copyMode.note) out.info(copyMode.note);
    const pool = new Piscina<WorkerTask, WorkerResult>({
      filename: WORKER.href,
      minThreads: config.threads,
      maxThreads: config.threads,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: 1,
    });

    // One bucket for the process: the threads take their tokens from it, however the work falls between them.
    const rateBucket = config.maxRps > 0 ? SharedRateBucket.create(config.maxRps).buffer : undefined;
    const started = Date.now();
    const progress = await withDbRetry(() =>
      startProgress(db, schema, runId, counters, { ...options.progress, stage: config.stage, limit: config.limit, telemetry }, stageStates(config.stage)),
    );
    const reaper = watchGoneRuns(db, schema);
    let results: WorkerResult[];
    try {
      results = await Promise.all(
        Array.from({ length: config.threads }, (_, workerIndex) =>
          pool.run({ config, idCast: table.idCast, guard, counters, rateBucket, telemetry, workerIndex }),
        ),
      );
    } finally {
      await reaper.stop();
      await progress.stop();
      await pool.destroy();
      await metrics?.stop();
    }

    const seconds = (Date.now() - started) / 1000;
    const states = await withDbRetry(() => countStates(db, schema));
    let fatal = results.find((r) => r.fatal)?.fatal;
    // A missing privilege is a configuration error: exit 2, one line naming the grant.
    const deniedByDatabase = results.find((r) => r.deniedByDatabase)?.deniedByDatabase;
    const denied = deniedByDatabase !== undefined || (fatal !== undefined && isS3AccessDenied(fatal));
    if (deniedByDatabase !== undefined) fatal = await explainDbDenied(db, config.migrate, deniedByDatabase);
    else if (fatal !== undefined && denied) fatal = explainS3Denied(fatal, config.migrate);
    // Each stage counts its own work: moved keys, keys moved with their sources kept, or deleted sources.
    const work = stageWork(config.stage);
    const moved = read(counters, work.counter);
    const figures = readTelemetry(telemetry);
    const summary = {
      seconds: Number(seconds.toFixed(2)),
      stage: config.stage ?? 'full',
      keysDone: moved,
      keysPerSecond: Number((moved / Math.max(seconds, 0.001)).toFixed(1)),
      keysCopied: read(counters, 'copied'),
      keysCommitted: read(counters, 'dbUpdated'),
      sourcesDeleted: read(counters, 'done'),
      bytesCopied: figures.bytesCopied,
      requests: read(counters, 'requests'),
      retries: read(counters, 'retries'),
      throttles: read(counters, 'throttles'),
      requeued: read(counters, 'requeued'),
      repaired: read(counters, 'repaired'),
      guard,
      states,
    };
    out.info(
      `execute: ${moved} ${work.noun} in ${formatDuration(seconds)} (${formatRate(summary.keysPerSecond)}/s); ` +
        `${summary.requests} S3 requests${moved > 0 ? ` (${(summary.requests / moved).toFixed(2)} per key)` : ''}, ${summary.retries} retried, ${summary.throttles} throttled`,
      { summary: true, stage: summary.stage, done: moved, seconds: summary.seconds, rate: summary.keysPerSecond, bytes_copied: summary.bytesCopied, requests: summary.requests, retries: summary.retries, throttles: summary.throttles },
    );
    if (summary.requeued > 0) {
      out.info(`${summary.requeued} times a source was still named by rows added since the plan: those rows were moved too before it was deleted`);
    }
    if (summary.repaired > 0) {
      out.info(`${summary.repaired} rows written between the reference check and the delete were moved to the copy after it (the index guard's window; the trigger guard closes it)`);
    }
    out.info(`ledger: ${Object.entries(states).map(([s, n]) => `${s} ${n}`).join(', ') || 'empty'}`, { states });
    await withDbRetry(() => printUnmovedKeys(db, schema));
    if (config.stage === 'delete-only' || config.stage === 'full') await withDbRetry(() => printRefusedDeletes({ db, schema }));
    if (config.stage === 'keep-source' && (states.db_updated ?? 0) > 0) {
      out.info(`${states.db_updated} keys moved with their sources kept: validate, then run execute --delete-only`);
    }

    const outcome = runOutcome('execute', {
      fatal,
      signal: stop.received,
      keysFailed: (states.failed ?? 0) > 0 || (states.conflict ?? 0) > 0 || (states.archived ?? 0) > 0,
      failedHint: 'some keys failed, are in conflict or are archived: see bucket-migrate report; execute --retry-failed re-queues failed keys',
    });
    const { status } = outcome;
    const exitCode = denied && fatal !== undefined && outcome.status === 'failed' ? 2 : outcome.exitCode;
    await withDbRetry(() => finishRun(db, schema, runId, status, exitCode, summary));
    return exitCode;
  } finally {
    stop.dispose();
    await db.destroy();
  }
}

function executeSettings(config: ExecuteConfig): Record<string, unknown> {
  return {
    threads: config.threads,
    concurrency: config.concurrency,
    batchSize: config.batchSize,
    pipeline: config.pipeline,
    leaseSeconds: config.leaseSeconds,
    maxAttempts: config.maxAttempts,
    multipartThreshold: config.multipartThreshold,
    overwrite: config.overwrite,
    destCheck: config.destCheck,
    copyMode: config.copyMode,
    maxRps: config.maxRps,
    limit: config.limit,
    stage: config.stage ?? 'full',
    deleteUnguarded: config.deleteUnguarded === true,
    host: os.hostname(),
  };
}
