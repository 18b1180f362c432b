import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import { UsageError } from '../errors.js';
import { out } from '../util/output.js';
import { read, type CounterName } from './counters.js';
import { LATENCY_BUCKETS, PG_STATEMENTS, S3_OPERATIONS, S3_OUTCOMES, readTelemetry, type Histogram } from './telemetry.js';

/** A running `/metrics` endpoint. */
export interface MetricsServer {
  /** The port it listens on (useful with `--metrics-port 0`). */
  port: number;
  /** Records the run's id in `bucket_migrate_run_info` once the run is recorded (not on every series: labels stay stable across runs). */
  setRunId(runId: number): void;
  stop(): Promise<void>;
}

/** Key outcomes exported as `bucket_migrate_keys_total{outcome}`, read from the shared counters. */
const OUTCOMES: CounterName[] = ['copied', 'dbUpdated', 'done', 'conflict', 'missing', 'superseded', 'archived', 'failed', 'retriedSteps'];

/**
 * Serves Prometheus text on `GET /metrics` for one `execute` or `revert`
 * run. Values come from the counters and telemetry the worker threads
 * already share with the main thread, read at scrape time: a scrape costs no
 * database query and no message to the workers. Ledger-wide numbers (keys
 * per state, ETA) are `bucket-migrate report`'s job: counting the ledger on
 * every scrape would scan it.
 *
 * Every label value comes from a fixed list (outcome, operation, statement
 * kind, command, stage), so series are the same from one run to the next;
 * the run's id is only on `bucket_migrate_run_info`.
 */
export async function startMetrics(options: {
  port: number;
  host?: string;
  /** `execute`'s shared counters (keys by outcome, claims, limiter). */
  counters?: Int32Array;
  /** Key outcomes of a run without shared counters (revert), read at scrape time. */
  keys?: () => Record<string, number>;
  telemetry: BigInt64Array;
  command: 'execute' | 'revert';
  stage: string;
}): Promise<MetricsServer> {
  const { counters, telemetry } = options;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bucket_migrate_' });

  // Counters only go up; prom-client's Counter has no set, so each scrape adds what changed.
  const seen = new Map<string, number>();
  const catchUp = (metric: Counter<string>, key: string, labels: Record<string, string>, now: number) => {
    const delta = now - (seen.get(key) ?? 0);
    if (delta > 0) metric.inc(labels, delta);
    seen.set(key, Math.max(now, seen.get(key) ?? 0));
  };
  const keys = new Counter({
    name: 'bucket_migrate_keys_total',
    help: 'Keys (or, for retried_steps, failed steps that will be retried) by outcome in this run',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      if (counters) for (const name of OUTCOMES) catchUp(this, `keys:${name}`, { outcome: snake(name) }, read(counters, name));
      if (options.keys) for (const [name, n] of Object.entries(options.keys())) catchUp(this, `keys:${name}`, { outcome: snake(name) }, n);
    },
  });
  if (counters) for (const name of OUTCOMES) keys.inc({ outcome: snake(name) }, 0);

  new Counter({
    name: 'bucket_migrate_s3_requests_total',
    help: 'S3 requests sent, by operation and outcome (ok, throttled, client_error, server_error, network_error); each retry is a request',
    labelNames: ['operation', 'outcome'],
    registers: [registry],
    collect() {
      const figures = readTelemetry(telemetry);
      for (const operation of S3_OPERATIONS) {
        for (const outcome of S3_OUTCOMES) catchUp(this, `s3:${operation}:${outcome}`, { operation, outcome }, figures.s3Requests[operation]![outcome]!);
      }
    },
  }).inc({ operation: 'CopyObject', outcome: 'ok' }, 0);
  histogram(registry, 'bucket_migrate_s3_request_duration_seconds', 'S3 request latency by operation, from send to answer (or error)', 'operation', () => readTelemetry(telemetry).s3Latency);
  histogram(registry, 'bucket_migrate_pg_statement_duration_seconds', 'Postgres statement latency by kind (its first keyword: select, update, with, ...)', 'statement', () => readTelemetry(telemetry).pgLatency);
  new Counter({
    name: 'bucket_migrate_pg_statement_errors_total',
    help: 'Postgres statements that failed, by kind (transient ones are retried)',
    labelNames: ['statement'],
    registers: [registry],
    collect() {
      const errors = readTelemetry(telemetry).pgErrors;
      for (const statement of PG_STATEMENTS) catchUp(this, `pgerr:${statement}`, { statement }, errors[statement]!);
    },
  }).inc({ statement: 'select' }, 0);
  new Counter({
    name: 'bucket_migrate_bytes_copied_total',
    help: 'Bytes copied server-side (CopyObject and UploadPartCopy); none pass through this process',
    registers: [registry],
    collect() {
      catchUp(this, 'bytes', {}, readTelemetry(telemetry).bytesCopied);
    },
  });
  if (counters) {
    new Counter({
      name: 'bucket_migrate_s3_retries_total',
      help: 'S3 requests retried after a transient error (throttle, 5xx, reset), counted after each batch',
      registers: [registry],
      collect() {
        catchUp(this, 'retries', {}, read(counters, 'retries'));
      },
    });
    new Counter({
      name: 'bucket_migrate_s3_throttles_total',
      help: 'S3 throttle answers (503 SlowDown, 429), counted after each batch; each shrinks the adaptive limit',
      registers: [registry],
      collect() {
        catchUp(this, 'throttles', {}, read(counters, 'throttles'));
      },
    });
  }
  new Gauge({
    name: 'bucket_migrate_s3_in_flight',
    help: 'S3 requests sent and not yet answered',
    registers: [registry],
    collect() {
      this.set(readTelemetry(telemetry).inFlight);
    },
  });
  new Gauge({
    name: 'bucket_migrate_s3_last_answer_timestamp_seconds',
    help: 'When S3 last answered a request (unix time; 0: not yet): alert when it lags while requests are in flight',
    registers: [registry],
    collect() {
      this.set(readTelemetry(telemetry).lastAnswerAt / 1000);
    },
  });
  if (counters) {
    new Gauge({
      name: 'bucket_migrate_keys_claimed',
      help: 'Keys claimed by this run so far (the --limit budget used)',
      registers: [registry],
      collect() {
        this.set(read(counters, 'claimed'));
      },
    });
    new Gauge({
      name: 'bucket_migrate_s3_in_flight_limit',
      help: 'The adaptive limiter\'s current cap on S3 requests in flight (per thread, last reported)',
      registers: [registry],
      collect() {
        this.set(read(counters, 'inFlightLimit'));
      },
    });
    new Gauge({
      name: 'bucket_migrate_stopping',
      help: '1 once the run was asked to stop (signal or fatal error)',
      registers: [registry],
      collect() {
        this.set(read(counters, 'stop'));
      },
    });
  }
  const runInfo = new Gauge({ name: 'bucket_migrate_run_info', help: 'This run: always 1; run_id names its row in the runs table', labelNames: ['command', 'stage', 'run_id'], registers: [registry] });

  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new UsageError(`--metrics-port ${options.port} on ${options.host ?? '127.0.0.1'}: ${err.message}`)));
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve());
  });
  // Never what keeps the process alive, even if the run fails before stop().
  server.unref();
  const port = (server.address() as AddressInfo).port;
  out.info(`metrics: http://${options.host ?? '127.0.0.1'}:${port}/metrics`);
  return {
    port,
    setRunId: (runId) => {
      runInfo.reset();
      runInfo.set({ command: options.command, stage: options.stage, run_id: String(runId) }, 1);
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A prom-client histogram fed from the shared buckets at scrape time (prom-client's own observes one value at a time). */
function histogram(registry: Registry, name: string, help: string, label: string, read: () => Record<string, Histogram>): void {
  const metric: Metric & { get(): Promise<unknown> } = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    get: async () => ({
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      values: Object.entries(read()).flatMap(([value, h]) => [
        ...h.buckets.map((count, i) => ({
          metricName: `${name}_bucket`,
          labels: { [label]: value, le: i < LATENCY_BUCKETS.length ? LATENCY_BUCKETS[i]! : '+Inf' },
          value: count,
        })),
        { metricName: `${name}_sum`, labels: { [label]: value }, value: h.sum },
        { metricName: `${name}_count`, labels: { [label]: value }, value: h.count },
      ]),
    }),
  } as unknown as Metric & { get(): Promise<unknown> };
  registry.registerMetric(metric);
}

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
