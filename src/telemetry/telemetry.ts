import type { S3Client } from '@aws-sdk/client-s3';
import { isThrottle, s3HttpStatus } from '../s3/errors.js';

/**
 * Request-level figures that every worker thread records into one
 * SharedArrayBuffer and the main thread reads: for the metrics endpoint
 * (requests by operation and outcome, latency histograms, bytes copied,
 * Postgres statement latency) and for progress lines that say why nothing
 * moves ("S3 not answering since ..."). Recording is a few `Atomics.add`s,
 * no message and no lock; nothing is recorded until a thread calls
 * {@link attachTelemetry}.
 *
 * The label values are fixed lists, so series keep the same labels from one
 * run to the next (dashboards and alerts do not break).
 */

/** S3 operations the tool sends; anything else is counted as `other`. */
export const S3_OPERATIONS = [
  'CopyObject',
  'HeadObject',
  'ListObjectsV2',
  'DeleteObjects',
  'UploadPartCopy',
  'CreateMultipartUpload',
  'CompleteMultipartUpload',
  'AbortMultipartUpload',
  'GetObjectTagging',
  'PutObject',
  'GetObject',
  'other',
] as const;

/** How one S3 request ended. */
export const S3_OUTCOMES = ['ok', 'throttled', 'client_error', 'server_error', 'network_error'] as const;

/** Kinds of Postgres statement, by their first keyword. */
export const PG_STATEMENTS = ['select', 'insert', 'update', 'delete', 'with', 'copy', 'other'] as const;

/** Upper bounds in seconds of the latency histograms' buckets (+Inf is implied). */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;

const OPS = S3_OPERATIONS.length;
const OUT = S3_OUTCOMES.length;
const PGS = PG_STATEMENTS.length;
// One slot per bucket plus +Inf, then the sum in microseconds.
const HIST = LATENCY_BUCKETS.length + 2;

const SLOT = {
  inFlight: 0,
  /** Date.now() of the last answer (any answer, even an error) from S3. */
  lastAnswerAt: 1,
  /** Date.now() of the first request sent after the last answer: S3 has been silent since then. */
  waitingSince: 2,
  bytesCopied: 3,
  s3Requests: 4,
  s3Latency: 4 + OPS * OUT,
  pgLatency: 4 + OPS * OUT + OPS * HIST,
  pgErrors: 4 + OPS * OUT + OPS * HIST + PGS * HIST,
  size: 4 + OPS * OUT + OPS * HIST + PGS * HIST + PGS,
} as const;

/** Creates the shared buffer (main thread). */
export function createTelemetry(): BigInt64Array {
  return new BigInt64Array(new SharedArrayBuffer(SLOT.size * BigInt64Array.BYTES_PER_ELEMENT));
}

let attached: BigInt64Array | undefined;

/** Makes this thread record into `buffer` (each worker thread, and the main thread for its own requests). */
export function attachTelemetry(buffer: BigInt64Array | undefined): void {
  attached = buffer;
}

const add = (slot: number, by: number | bigint) => {
  if (attached) Atomics.add(attached, slot, BigInt(by));
};

function bucketIndex(seconds: number): number {
  const i = LATENCY_BUCKETS.findIndex((le) => seconds <= le);
  return i === -1 ? LATENCY_BUCKETS.length : i;
}

function observe(base: number, seconds: number): void {
  add(base + bucketIndex(seconds), 1);
  add(base + HIST - 1, Math.round(seconds * 1e6));
}

/** Which outcome label an S3 error gets. */
export function s3Outcome(err: unknown): (typeof S3_OUTCOMES)[number] {
  if (err === undefined) return 'ok';
  if (isThrottle(err)) return 'throttled';
  const status = s3HttpStatus(err);
  if (status === undefined) return 'network_error';
  return status >= 500 ? 'server_error' : 'client_error';
}

/** Records one S3 request (used by the client middleware; exported for the tests of the layout). */
export function recordS3Request(operation: string, seconds: number, err: unknown): void {
  if (!attached) return;
  const op = Math.max(0, S3_OPERATIONS.indexOf(operation as (typeof S3_OPERATIONS)[number]));
  const index = op === 0 && operation !== 'CopyObject' ? OPS - 1 : op;
  add(SLOT.s3Requests + index * OUT + S3_OUTCOMES.indexOf(s3Outcome(err)), 1);
  observe(SLOT.s3Latency + index * HIST, seconds);
}

/** Bytes the server copied for us (server-side: none of them passed through this process). */
export function recordBytesCopied(bytes: number | null | undefined): void {
  if (bytes && bytes > 0) add(SLOT.bytesCopied, bytes);
}

/** Records one Postgres statement's duration, by its first keyword. */
export function recordPgStatement(sqlText: string, seconds: number, failed: boolean): void {
  if (!attached) return;
  const word = /^\s*(\w+)/.exec(sqlText)?.[1]?.toLowerCase() ?? 'other';
  const kind = Math.max(PG_STATEMENTS.indexOf(word as (typeof PG_STATEMENTS)[number]), 0);
  const index = kind === 0 && word !== 'select' ? PGS - 1 : kind;
  observe(SLOT.pgLatency + index * HIST, seconds);
  if (failed) add(SLOT.pgErrors + index, 1);
}

/**
 * Adds a middleware to `s3` that records every request's operation,
 * outcome and latency, and keeps the in-flight count and the time of the
 * last answer. It sits at the `finalizeRequest` step, so it times each
 * request as sent (our retries are separate sends).
 */
export function instrumentS3Client(s3: S3Client): void {
  s3.middlewareStack.add(
    (next, context) => async (args) => {
      const operation = String((context as { commandName?: string }).commandName ?? 'other').replace(/Command$/, '');
      const started = Date.now();
      if (attached) {
        Atomics.add(attached, SLOT.inFlight, 1n);
        // The first send since the last answer starts the silence a stall is measured from.
        const waiting = Atomics.load(attached, SLOT.waitingSince);
        if (waiting <= Atomics.load(attached, SLOT.lastAnswerAt)) Atomics.compareExchange(attached, SLOT.waitingSince, waiting, BigInt(started));
      }
      let error: unknown;
      try {
        return await next(args);
      } catch (err) {
        error = err;
        throw err;
      } finally {
        const now = Date.now();
        if (attached) {
          Atomics.sub(attached, SLOT.inFlight, 1n);
          // An error without an HTTP status is not an answer: the server said nothing.
          if (error === undefined || s3HttpStatus(error) !== undefined) Atomics.store(attached, SLOT.lastAnswerAt, BigInt(now));
        }
        recordS3Request(operation, (now - started) / 1000, error);
      }
    },
    { step: 'finalizeRequest', name: 'bucketMigrateTelemetry' },
  );
}

/** A point-in-time copy of the figures, for the metrics endpoint. */
export interface TelemetrySnapshot {
  inFlight: number;
  /** When S3 last answered (ms since the epoch; 0: not yet). */
  lastAnswerAt: number;
  /** The first send after the last answer (ms; later than lastAnswerAt while S3 is silent). */
  waitingSince: number;
  bytesCopied: number;
  /** requests[operation][outcome] */
  s3Requests: Record<string, Record<string, number>>;
  s3Latency: Record<string, Histogram>;
  pgLatency: Record<string, Histogram>;
  pgErrors: Record<string, number>;
}

/** Cumulative bucket counts (`le` order, then +Inf), the count and the sum in seconds. */
export interface Histogram {
  buckets: number[];
  count: number;
  sum: number;
}

function readHistogram(buffer: BigInt64Array, base: number): Histogram {
  const buckets: number[] = [];
  let running = 0;
  for (let i = 0; i < LATENCY_BUCKETS.length + 1; i++) {
    running += Number(Atomics.load(buffer, base + i));
    buckets.push(running);
  }
  return { buckets, count: running, sum: Number(Atomics.load(buffer, base + HIST - 1)) / 1e6 };
}

export function readTelemetry(buffer: BigInt64Array): TelemetrySnapshot {
  const s3Requests: TelemetrySnapshot['s3Requests'] = {};
  const s3Latency: TelemetrySnapshot['s3Latency'] = {};
  S3_OPERATIONS.forEach((op, o) => {
    s3Requests[op] = Object.fromEntries(S3_OUTCOMES.map((outcome, k) => [outcome, Number(Atomics.load(buffer, SLOT.s3Requests + o * OUT + k))]));
    s3Latency[op] = readHistogram(buffer, SLOT.s3Latency + o * HIST);
  });
  const pgLatency: TelemetrySnapshot['pgLatency'] = {};
  const pgErrors: TelemetrySnapshot['pgErrors'] = {};
  PG_STATEMENTS.forEach((kind, k) => {
    pgLatency[kind] = readHistogram(buffer, SLOT.pgLatency + k * HIST);
    pgErrors[kind] = Number(Atomics.load(buffer, SLOT.pgErrors + k));
  });
  return {
    inFlight: Number(Atomics.load(buffer, SLOT.inFlight)),
    lastAnswerAt: Number(Atomics.load(buffer, SLOT.lastAnswerAt)),
    waitingSince: Number(Atomics.load(buffer, SLOT.waitingSince)),
    bytesCopied: Number(Atomics.load(buffer, SLOT.bytesCopied)),
    s3Requests,
    s3Latency,
    pgLatency,
    pgErrors,
  };
}

/**
 * What S3 is doing to the run right now, for a progress line: undefined
 * while it answers; otherwise since when it has not answered although
 * requests are in flight (a freeze, a partition, a server that accepts
 * connections but never replies).
 */
export function s3Stall(buffer: BigInt64Array, now = Date.now(), afterMs = 5_000): { since: number; inFlight: number } | undefined {
  const inFlight = Number(Atomics.load(buffer, SLOT.inFlight));
  if (inFlight <= 0) return undefined;
  const lastAnswer = Number(Atomics.load(buffer, SLOT.lastAnswerAt));
  const waiting = Number(Atomics.load(buffer, SLOT.waitingSince));
  if (waiting <= lastAnswer || now - waiting < afterMs) return undefined;
  return { since: waiting, inFlight };
}
