import type { MigrateConfig } from '../config/config.js';
import type { ExecuteStage } from './stage.js';

/**
 * How a destination that may already exist is detected before a copy. In
 * every mode the copy itself also carries `If-None-Match: *` (unless
 * `--overwrite`), which a server that honours it (AWS since October 2025)
 * turns into an atomic check; the modes differ in what they do before it,
 * for servers that ignore it (MinIO).
 */
export type DestCheck =
  /**
   * The default. One ListObjectsV2 of each batch's destination key range
   * instead of a HEAD per key (keys found there are HEADed and resolved as
   * with `head`): a fresh batch costs one request instead of one per key.
   * The check is made when the batch starts.
   */
  | 'list'
  /** HEAD the destination right before each copy: the narrowest window on a server that ignores If-None-Match, at one more request per key. */
  | 'head'
  /** Nothing before the copy: trust `If-None-Match: *` alone (AWS, not MinIO). */
  | 'conditional';

/** The `--dest-check` mode when none is given (see {@link DestCheck}). */
export const DEFAULT_DEST_CHECK: DestCheck = 'list';

/** Settings of `execute`, shared by the main thread and every worker. */
export interface ExecuteConfig {
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
  /** Objects larger than this are copied in parts. */
  multipartThreshold: number;
  /** Part size of multipart copies (raised as needed to stay within 10,000 parts). */
  partSize: number;
  /** Replace a different object at the destination instead of recording a conflict. */
  overwrite: boolean;
  destCheck: DestCheck;
  /** `--storage-class`: every copy gets this class instead of its source's. */
  storageClass?: string;
  /** `--sse-kms-key-id`: every copy is encrypted with this KMS key instead of as its source is. */
  sseKmsKeyId?: string;
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
  /** This process's id, prefix of every worker's lease owner id. */
  processId: string;
}

/** 5 GiB: the largest single CopyObject. */
export const MAX_SINGLE_COPY = 5 * 1024 ** 3;
