import { setTimeout as sleep } from 'node:timers/promises';
import { threadId } from 'node:worker_threads';
import { sql } from 'kysely';
import { createDatabase } from '../db/database.js';
import { withDbRetry } from '../db/retry.js';
import { FatalError, explainDbError, oneLine } from '../errors.js';
import { anyInStates } from '../ledger/claim-scan.js';
import { claimBatch, releaseLeases, type LedgerContext, type LiveState } from '../ledger/state-machine.js';
import { createS3Client } from '../s3/client.js';
import { AdaptiveLimiter } from '../s3/limiter.js';
import { SharedRateBucket } from '../s3/rate-bucket.js';
import type { RequestStats } from '../s3/retry.js';
import { COUNTER, bump, read, write } from '../telemetry/counters.js';
import type { ExecuteConfig } from './execute-config.js';
import { processBatch, type BatchContext } from './process-batch.js';
import { stageStates } from './stage.js';
import { attachTelemetry, instrumentS3Client, recordPgStatement } from '../telemetry/telemetry.js';
import type { GuardMode } from '../guard/guard.js';

/** What a worker thread hands to the main thread when it ends. */
export interface WorkerResult {
  stats: RequestStats;
  /** Set when the worker stopped on an error the run cannot survive. */
  fatal?: string;
  /** Set when that error was Postgres refusing a privilege (42501): the main thread names the grant. */
  deniedByDatabase?: string;
}

/** The task each worker thread runs: config plus the shared counters. */
export interface WorkerTask {
  config: ExecuteConfig;
  /** Ledger facts found by the main thread (`inspectTable`). */
  idCast: string;
  /** The delete guard chosen by the main thread (src/guard/guard.ts). */
  guard: GuardMode;
  counters: Int32Array;
  /** The process's `--max-rps` bucket (`SharedRateBucket.buffer`), shared by all its threads; none without a cap. */
  rateBucket?: SharedArrayBuffer;
  /** Request-level figures shared with the main thread (see telemetry.ts). */
  telemetry?: BigInt64Array;
  workerIndex: number;
}

/**
 * One worker thread's life: claim a batch, move it, repeat, until the ledger
 * has nothing live left, the `--limit` is reached, or the main thread asks
 * to stop. `pipeline` batches are in flight at once, so S3 is kept busy
 * while another batch is in the database.
 */
export async function runWorker(task: WorkerTask): Promise<WorkerResult> {
  const { config, counters } = task;
  const stats: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  attachTelemetry(task.telemetry);
  const db = createDatabase({ url: config.migrate.databaseUrl!, max: config.pipeline + 2, applicationName: 'bucket-migrate worker', onStatement: recordPgStatement });
  const s3 = createS3Client(config.migrate.s3, { maxSockets: config.concurrency });
  instrumentS3Client(s3);
  // Request counts reach the main thread after every batch, not only at the end: progress and metrics read them live.
  const flushed: RequestStats = { requests: 0, retries: 0, throttles: 0 };
  const flushStats = () => {
    for (const name of ['requests', 'retries', 'throttles'] as const) {
      bump(counters, name, stats[name] - flushed[name]);
      flushed[name] = stats[name];
    }
  };
  const limiter = new AdaptiveLimiter({
    maxInFlight: config.concurrency,
    minInFlight: Math.min(4, config.concurrency),
    bucket: task.rateBucket ? SharedRateBucket.open(task.rateBucket) : undefined,
  });
  const ledger: LedgerContext = {
    db,
    schema: config.migrate.ledgerSchema,
    table: config.migrate.table,
    idColumn: config.migrate.idColumn,
    pathColumn: config.migrate.pathColumn,
    idCast: task.idCast,
    guard: task.guard,
    locations: { source: config.migrate.source, target: config.migrate.target },
    me: `${config.processId}/w${task.workerIndex}-t${threadId}`,
  };
  const ctx: BatchContext = { ledger, s3: { s3, limiter, stats, config }, config, counters };
  const stopping = () => read(counters, 'stop') === 1;
  const states = stageStates(config.stage);
  const result: WorkerResult = { stats };

  // Slow start: the first claims are small and double up to --batch-size.
  // A key is done only when its whole batch has been copied, committed,
  // fenced and deleted, so a first batch of 250 showed nothing done for
  // seconds; one of 25 shows the rate at once, and the listing per batch
  // this costs is a handful of requests per run.
  let claimSize = Math.min(config.batchSize, FIRST_CLAIM);
  const nextClaimSize = () => {
    const size = claimSize;
    claimSize = Math.min(config.batchSize, claimSize * 2);
    return size;
  };

  const loop = async (lane: number) => {
    const laneCtx: BatchContext = { ...ctx, ledger: { ...ledger, me: `${ledger.me}.${lane}` } };
    while (!stopping()) {
      const want = reserve(counters, nextClaimSize(), config.limit);
      if (want === 0) return;
      // The lease is counted from when the claim was sent (see LeaseClock).
      const claimedAt = Date.now();
      const rows = await withDbRetry(() => claimBatch(laneCtx.ledger, want, config.leaseSeconds, { states }));
      unreserve(counters, want, rows.length, config.limit);
      if (rows.length === 0) {
        if (!(await hasLiveRows(laneCtx.ledger, states))) return;
        bump(counters, 'waitingLanes');
        try {
          await sleep(500);
        } finally {
          bump(counters, 'waitingLanes', -1);
        }
        continue;
      }
      try {
        await processBatch(laneCtx, rows, claimedAt);
      } catch (err) {
        // Give unfinished rows back at once rather than after the lease.
        await releaseLeases(laneCtx.ledger, rows.map((r) => r.id)).catch(() => undefined);
        throw err;
      }
      write(counters, 'inFlightLimit', limiter.limit);
      flushStats();
    }
  };

  try {
    // A failing lane stops the others from claiming, but they finish (or
    // give back) the batch in hand before this thread returns: leaving it
    // would hold its keys' leases for --lease-seconds after the run.
    const lanes = await Promise.allSettled(
      Array.from({ length: config.pipeline }, (_, lane) =>
        loop(lane).catch((err: unknown) => {
          write(counters, 'stop', 1);
          throw err;
        }),
      ),
    );
    const failed = lanes.find((l): l is PromiseRejectedResult => l.status === 'rejected');
    if (failed) {
      const err: unknown = failed.reason;
      if ((err as { code?: string })?.code === '42501') result.deniedByDatabase = oneLine(err);
      result.fatal = err instanceof FatalError ? err.message : (explainDbError(err) ?? `unexpected error in worker: ${oneLine(err)}`);
    }
  } finally {
    flushStats();
    s3.destroy();
    await db.destroy();
  }
  return result;
}

/** Keys in a worker's first claim (see the slow start in {@link runWorker}). */
export const FIRST_CLAIM = 25;

/** Takes up to `batch` keys from the `--limit` budget (all of it without a limit). */
function reserve(counters: Int32Array, batch: number, limit: number): number {
  if (limit <= 0) return batch;
  for (;;) {
    const claimed = Atomics.load(counters, COUNTER.claimed);
    const take = Math.min(batch, limit - claimed);
    if (take <= 0) return 0;
    if (Atomics.compareExchange(counters, COUNTER.claimed, claimed, claimed + take) === claimed) return take;
  }
}

/** Returns what a claim did not use; without a limit, just counts the claim. */
function unreserve(counters: Int32Array, wanted: number, got: number, limit: number): void {
  if (limit > 0) Atomics.sub(counters, COUNTER.claimed, wanted - got);
  else Atomics.add(counters, COUNTER.claimed, got);
}

/**
 * Whether any row this run may claim is still live (leased elsewhere, or
 * backing off). Only `states` count: rows parked by `--keep-source` must not
 * keep that run waiting, and are not even read: one index probe per state
 * (src/ledger/claim-scan.ts).
 */
export async function hasLiveRows(ctx: LedgerContext, states: readonly LiveState[]): Promise<boolean> {
  const result = await withDbRetry(() =>
    sql<{ live: boolean }>`
      select ${anyInStates(sql.id(ctx.schema, 'migration_ledger'), states)} as live
    `.execute(ctx.db),
  );
  return result.rows[0]?.live === true;
}
