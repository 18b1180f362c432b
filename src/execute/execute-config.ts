import type { MigrateConfig } from '../config/config.js';
import type { CopyConfig } from '../copy/copy-config.js';
import type { ExecuteStage } from './stage.js';

/** Settings of `execute`, shared by the main thread and every worker. */
export interface ExecuteConfig extends CopyConfig {
  migrate: MigrateConfig;
  /** Worker threads. */
  threads: number;
  /** S3 requests in flight per worker thread, at most. */
  concurrency: number;
  /** Ledger rows per claim. */
  batchSize: number;
  /** Batches each worker keeps in progress, so S3 stays busy while a batch is in the database. */
  pipeline: number;
  /** How long a claim is valid without renewal. */
  leaseSeconds: number;
  /** Failures of one key before it is `failed`. */
  maxAttempts: number;
  /**
   * S3 requests per second for the whole process (0: no cap): one token
   * bucket (`SharedRateBucket`) that every worker thread takes from, however
   * the work falls between them. Per process: N processes may send N times it.
   */
  maxRps: number;
  /** First backoff after a failed step, in seconds. */
  backoffSeconds: number;
  /** Stop after this many keys have been claimed (0: no limit). */
  limit: number;
  /** Which part of the move this run does (default `full`). */
  stage?: ExecuteStage;
  /** `--delete-unguarded`: delete sources even when no guard (trigger or index) is available. */
  deleteUnguarded?: boolean;
  /** This process's id, prefix of every worker's lease owner id. */
  processId: string;
}
