import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeConfig, type MigrateConfig } from '../config/config.js';
import { checkConnection, createDatabase } from '../db/database.js';
import { migrateLedger } from '../db/migrate.js';
import { withDbRetry } from '../db/retry.js';
import { inspectTable } from '../db/table-info.js';
import { UsageError } from '../errors.js';
import { sql } from 'kysely';
import { MAX_SINGLE_COPY, type CopyConfig } from '../copy/copy-config.js';
import { LeaseClock, renewWhileWorking } from '../ledger/lease-fence.js';
import { chooseGuard, describeGuard, guardStatus, type GuardMode } from '../guard/guard.js';
import { bindLedgerConfig, ledgerExists } from '../ledger/ledger-config.js';
import { releaseLeasesOfGoneRuns, watchGoneRuns } from '../ledger/gone-runs.js';
import { countStates, finishRun, runOutcome, startHeartbeat, startRun } from '../ledger/runs.js';
import {
  type LedgerContext,
  claimRevert,
  ensureRevertIndex,
  hasRevertable,
  listRevertFailed,
  releaseRevertLeases,
  renewBatchLeases,
  requeueRevertFailed,
} from '../ledger/state-machine.js';
import { createS3Client } from '../s3/client.js';
import { startMetrics, type MetricsServer } from '../telemetry/metrics.js';
import { attachTelemetry, createTelemetry, instrumentS3Client, recordPgStatement } from '../telemetry/telemetry.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { checkLocation } from '../s3/preflight.js';
import type { RequestStats } from '../s3/retry.js';
import { addLogFields } from '../util/json-log.js';
import { formatDuration, out } from '../util/output.js';
import { handleStopSignals } from '../util/stop-signals.js';
import { revertBatch, type RevertTally } from './revert-batch.js';

/** Settings of one `revert` run. */
export interface RevertConfig {
  migrate: MigrateConfig;
  /** S3 requests in flight, at most. */
  concurrency: number;
  batchSize: number;
  leaseSeconds: number;
  maxAttempts: number;
  backoffSeconds: number;
  /** Revert at most this many keys, then stop (0: all). */
  limit: number;
  retryFailed: boolean;
  quiet: boolean;
  /** `--delete-unguarded`: delete target copies even without a guard (trigger or index). */
  deleteUnguarded?: boolean;
  processId: string;
  /** Serve Prometheus metrics on this port while the run lasts (`--metrics-port`). */
  metricsPort?: number;
  /** The address it listens on (`--metrics-host`, default loopback). */
  metricsHost?: string;
}

/**
 * Moves migrated keys back: every key in `db_updated` or `done` (and keys
 * whose source delete was refused) ends `reverted`, its rows naming the
 * source key again. Same guarantees as `execute`: claims with leases, one
 * statement per transition, safe to kill and to run again, several
 * processes may share the ledger. Returns the exit code: 0 when every key
 * claimed was reverted, 1 when any was given up on (or a fatal error),
 * 130/143 when interrupted.
 */
export async function revert(config: RevertConfig): Promise<number> {
  const url = config.migrate.databaseUrl!;
  const schema = config.migrate.ledgerSchema;
  // Request-level figures for --metrics-port (S3 requests, latencies, statement latency).
  const telemetry = createTelemetry();
  attachTelemetry(telemetry);
  const db = createDatabase({ url, max: 4, applicationName: 'bucket-migrate revert', onStatement: recordPgStatement });
  let metrics: MetricsServer | undefined;
  const stop = handleStopSignals('the batch in hand', 'run revert again to resume');
  const s3 = createS3Client(config.migrate.s3, { maxSockets: config.concurrency });
  instrumentS3Client(s3);
  try {
    await checkConnection(db, url);
    if (!(await ledgerExists(db, schema))) throw new UsageError(`there is no ledger in schema ${schema}: nothing was migrated, so nothing to revert`);
    await migrateLedger(db, schema);
    await bindLedgerConfig(db, config.migrate, 'use');
    const table = await inspectTable(db, config.migrate.table, config.migrate.idColumn, config.migrate.pathColumn);
    await checkLocation(s3, config.migrate.source, 'SOURCE_BUCKET');
    await checkLocation(s3, config.migrate.target, 'TARGET_BUCKET');
    // The guard for the target deletes (src/guard/guard.ts), decided before
    // anything is changed. A revert that deletes no target (every key still
    // has its source) needs none.
    const guarding = await guardStatus(db, config.migrate, table.hasPathIndex);
    const deletesTargets = (
      await sql<{ found: boolean }>`
        select exists (select 1 from ${sql.id(schema, 'migration_ledger')} where state in ('done', 'deleting', 'reverting')) as found
      `.execute(db)
    ).rows[0]?.found === true;
    const guard: GuardMode = deletesTargets
      ? chooseGuard(guarding, config.migrate, 'revert', config.deleteUnguarded === true)
      : guarding.triggerCovered ? 'trigger' : guarding.hasPathIndex ? 'index' : 'none';
    // Before the run is recorded: a port in use must not leave a run 'running'.
    let keys: () => Record<string, number> = () => ({});
    if (config.metricsPort !== undefined) {
      metrics = await startMetrics({ port: config.metricsPort, host: config.metricsHost, telemetry, keys: () => keys(), command: 'revert', stage: 'revert' });
    }
    // Refused (exit 2) while an execute runs on this ledger; nothing is changed before.
    const runId = await startRun(
      db,
      schema,
      'revert',
      {
        ...describeConfig(config.migrate),
        concurrency: config.concurrency,
        batchSize: config.batchSize,
        limit: config.limit,
        host: os.hostname(),
      },
      config.processId,
    );
    metrics?.setRunId(runId);
    // After every check that can refuse the run: a refusal stays one line.
    out.info(describeGuard(guard, config.migrate));
    addLogFields({ run_id: runId });
    const tally: RevertTally = { rowsOnly: 0, copiedBack: 0, reverted: 0, failed: 0, rowsMovedBackLate: 0, repaired: 0, targetsKept: 0 };
    keys = () => ({ reverted: tally.reverted, copiedBack: tally.copiedBack, rowsOnly: tally.rowsOnly, revertFailed: tally.failed });
    const heartbeat = startHeartbeat(db, schema, runId, () => ({ ...tally }));
    const reaper = watchGoneRuns(db, schema);
    try {
      await ensureRevertIndex({ db, schema });
      if (config.retryFailed) out.info(`re-queued ${await requeueRevertFailed({ db, schema })} keys revert had given up on`);
      await releaseLeasesOfGoneRuns(db, schema);
      const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
      const limiter = new AdaptiveLimiter({ maxInFlight: config.concurrency, minInFlight: Math.min(4, config.concurrency) });
      const ledger: LedgerContext = {
        db,
        schema,
        table: config.migrate.table,
        idColumn: config.migrate.idColumn,
        pathColumn: config.migrate.pathColumn,
        idCast: table.idCast,
        me: `${config.processId}/revert`,
        guard,
        locations: { source: config.migrate.source, target: config.migrate.target },
      };
      // The copy back is execute's copy with source and target swapped.
      const back: CopyConfig = {
        migrate: { source: config.migrate.target, target: config.migrate.source },
        multipartThreshold: MAX_SINGLE_COPY,
        partSize: 256 * 1024 ** 2,
        overwrite: false,
        destCheck: 'head',
      };
      const ctx = { ledger, back: { s3, limiter, stats, config: back }, maxAttempts: config.maxAttempts, backoffSeconds: config.backoffSeconds };
      const started = Date.now();
      let lastProgress = started;
      let claimed = 0;
      let fatal: string | undefined;

      try {
        const runBatch = async (rows: Awaited<ReturnType<typeof claimRevert>>, claimedAt: number) => {
          const ids = rows.map((r) => r.id);
          // The lease as this process sees it (see LeaseClock): a renewal that
          // finds a key taken stops the batch's destructive steps.
          const lease = new LeaseClock(claimedAt, config.leaseSeconds);
          const stopRenewing = renewWhileWorking(lease, ids, (held) => withDbRetry(() => renewBatchLeases(ledger, held, config.leaseSeconds)));
          try {
            await revertBatch(ctx, rows, tally, lease);
          } catch (err) {
            await releaseRevertLeases(ledger, ids).catch(() => undefined);
            throw err;
          } finally {
            stopRenewing();
          }
          if (!config.quiet && Date.now() - lastProgress > 5_000) {
            lastProgress = Date.now();
            out.info(`revert: ${tally.reverted} keys reverted, ${tally.failed} given up on`);
          }
        };
        while (!stop.received) {
          const want = config.limit > 0 ? Math.min(config.batchSize, config.limit - claimed) : config.batchSize;
          if (want <= 0) break;
          const claimedAt = Date.now();
          const rows = await withDbRetry(() => claimRevert(ledger, want, config.leaseSeconds, config.maxAttempts));
          claimed += rows.length;
          if (rows.length === 0) {
            if (!(await withDbRetry(() => hasRevertable({ db, schema }, config.maxAttempts)))) break;
            await sleep(500);
            continue;
          }
          await runBatch(rows, claimedAt);
        }
        // A run does not stop with keys half-way back (rows moved back, the
        // copy not deleted yet) that it can finish: a batch that had to give
        // its keys back (a long application transaction, a lost lease), or a
        // `--limit` reached, leaves them `reverting`, and nothing but a
        // revert finishes them. Passes are bounded; what is left is reported.
        for (let pass = 0; !stop.received && pass < 10; pass++) {
          const claimedAt = Date.now();
          const rows = await withDbRetry(() => claimRevert(ledger, config.batchSize, config.leaseSeconds, config.maxAttempts, true));
          if (rows.length === 0) break;
          await runBatch(rows, claimedAt);
        }
      } catch (err) {
        fatal = err instanceof Error ? err.message : String(err);
      }

      const seconds = (Date.now() - started) / 1000;
      const states = await countStates(db, schema);
      out.info(
        `revert: ${tally.reverted} keys reverted in ${formatDuration(seconds)} (${tally.copiedBack} copied back, ` +
          `${tally.rowsOnly} with their source still in place: rows only); ${stats.requests} S3 requests`,
      );
      if (tally.rowsMovedBackLate > 0) out.info(`${tally.rowsMovedBackLate} rows written with a target path after cutover were moved back before their target was deleted`);
      if (tally.repaired > 0) out.info(`${tally.repaired} rows written between the reference check and the delete were moved back after it (the index guard's window)`);
      if (tally.targetsKept > 0) out.info(`${tally.targetsKept} targets were kept: this migration did not make them (they were there before it copied anything) (see report: reverted keys with a note)`);
      out.info(`ledger: ${Object.entries(states).map(([s, n]) => `${s} ${n}`).join(', ') || 'empty'}`);
      const given = await listRevertFailed({ db, schema });
      if (given.total > 0) {
        out.error(`${given.total} keys could not be reverted (their rows are unchanged):`);
        for (const row of given.rows) out.error(`  ${row.src_key} <- ${row.dst_key}: ${row.last_error ?? ''}`);
        out.error('fix each cause, then run bucket-migrate revert --retry-failed');
      }

      const halfway = states.reverting ?? 0;
      if (halfway > 0 && !stop.received && !fatal) {
        // Not a failure by itself: another revert may hold them right now.
        out.info(`${halfway} keys are still reverting (rows moved back, the copy not deleted yet): if no other revert is running, run bucket-migrate revert again to finish them`);
      }
      const { status, exitCode } = runOutcome('revert', { fatal, signal: stop.received, keysFailed: given.total > 0 });
      await finishRun(db, schema, runId, status, exitCode, { seconds, ...tally, requests: stats.requests, states });
      return exitCode;
    } finally {
      heartbeat.stop();
      await reaper.stop();
    }
  } finally {
    stop.dispose();
    await metrics?.stop();
    s3.destroy();
    await db.destroy();
  }
}
