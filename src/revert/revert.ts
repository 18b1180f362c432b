import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeConfig, type MigrateConfig } from '../config/config.js';
import { checkConnection, createDatabase } from '../db/database.js';
import { migrateLedger } from '../db/migrate.js';
import { withDbRetry } from '../db/retry.js';
import { inspectTable } from '../db/table-info.js';
import { UsageError } from '../errors.js';
import type { ExecuteConfig } from '../execute/execute-config.js';
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
  renewLeases,
  requeueRevertFailed,
} from '../ledger/state-machine.js';
import { createS3Client } from '../s3/client.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { checkLocation } from '../s3/preflight.js';
import type { RequestStats } from '../s3/retry.js';
import { addLogFields } from '../util/json-log.js';
import { formatDuration, out } from '../util/output.js';
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
  processId: string;
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
  const db = createDatabase({ url, max: 4, applicationName: 'bucket-migrate revert' });
  let signal: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signal) process.exit(sig === 'SIGINT' ? 130 : 143);
    signal = sig;
    out.info(`${sig}: finishing the batch in hand, then stopping (press Ctrl-C again to force)`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const s3 = createS3Client(config.migrate.s3, { maxSockets: config.concurrency });
  try {
    await checkConnection(db, url);
    if (!(await ledgerExists(db, schema))) throw new UsageError(`there is no ledger in schema ${schema}: nothing was migrated, so nothing to revert`);
    await migrateLedger(db, schema);
    await bindLedgerConfig(db, config.migrate, 'use');
    const table = await inspectTable(db, config.migrate.table, config.migrate.idColumn, config.migrate.pathColumn);
    await checkLocation(s3, config.migrate.source, 'SOURCE_BUCKET');
    await checkLocation(s3, config.migrate.target, 'TARGET_BUCKET');
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
    addLogFields({ run_id: runId });
    const tally: RevertTally = { rowsOnly: 0, copiedBack: 0, reverted: 0, failed: 0 };
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
      };
      // The copy back is execute's copy with source and target swapped.
      const back: ExecuteConfig = {
        migrate: { ...config.migrate, source: config.migrate.target, target: config.migrate.source },
        threads: 1,
        concurrency: config.concurrency,
        batchSize: config.batchSize,
        pipeline: 1,
        leaseSeconds: config.leaseSeconds,
        maxAttempts: config.maxAttempts,
        multipartThreshold: 5 * 1024 ** 3,
        partSize: 256 * 1024 ** 2,
        overwrite: false,
        destCheck: 'head',
        maxRps: 0,
        backoffSeconds: config.backoffSeconds,
        limit: 0,
        processId: config.processId,
      };
      const ctx = { ledger, back: { s3, limiter, stats, config: back }, maxAttempts: config.maxAttempts, backoffSeconds: config.backoffSeconds };
      const started = Date.now();
      let lastProgress = started;
      let claimed = 0;
      let fatal: string | undefined;

      try {
        while (!signal) {
          const want = config.limit > 0 ? Math.min(config.batchSize, config.limit - claimed) : config.batchSize;
          if (want <= 0) break;
          const rows = await withDbRetry(() => claimRevert(ledger, want, config.leaseSeconds, config.maxAttempts));
          claimed += rows.length;
          if (rows.length === 0) {
            if (!(await withDbRetry(() => hasRevertable({ db, schema }, config.maxAttempts)))) break;
            await sleep(500);
            continue;
          }
          const ids = rows.map((r) => r.id);
          const heartbeat = setInterval(() => {
            void withDbRetry(() => renewLeases(ledger, ids, config.leaseSeconds)).catch(() => undefined);
          }, Math.max(1_000, (config.leaseSeconds * 1000) / 3));
          try {
            await revertBatch(ctx, rows, tally);
          } catch (err) {
            await releaseRevertLeases(ledger, ids).catch(() => undefined);
            throw err;
          } finally {
            clearInterval(heartbeat);
          }
          if (!config.quiet && Date.now() - lastProgress > 5_000) {
            lastProgress = Date.now();
            out.info(`revert: ${tally.reverted} keys reverted, ${tally.failed} given up on`);
          }
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
      out.info(`ledger: ${Object.entries(states).map(([s, n]) => `${s} ${n}`).join(', ') || 'empty'}`);
      const given = await listRevertFailed({ db, schema }, config.maxAttempts);
      if (given.total > 0) {
        out.error(`${given.total} keys could not be reverted (their rows are unchanged):`);
        for (const row of given.rows) out.error(`  ${row.src_key} <- ${row.dst_key}: ${row.last_error ?? ''}`);
        out.error('fix each cause, then run bucket-migrate revert --retry-failed');
      }

      const { status, exitCode } = runOutcome('revert', { fatal, signal, keysFailed: given.total > 0 });
      await finishRun(db, schema, runId, status, exitCode, { seconds, ...tally, requests: stats.requests, states });
      return exitCode;
    } finally {
      heartbeat.stop();
      await reaper.stop();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    s3.destroy();
    await db.destroy();
  }
}
