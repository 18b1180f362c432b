import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { UsageError } from '../errors.js';
import { out } from '../util/output.js';
import { read, type CounterName } from './counters.js';

/** A running `/metrics` endpoint. */
export interface MetricsServer {
  /** The port it listens on (useful with `--metrics-port 0`). */
  port: number;
  /** Labels every series with the run's id, once the run is recorded. */
  setRunId(runId: number): void;
  stop(): Promise<void>;
}

/** Key outcomes exported as `bucket_migrate_keys_total{outcome}`, read from the shared counters. */
const OUTCOMES: CounterName[] = ['copied', 'dbUpdated', 'done', 'conflict', 'missing', 'superseded', 'archived', 'failed', 'retriedSteps'];

/**
 * Serves Prometheus text on `GET /metrics` for one `execute` run. Values
 * come from the counters the worker threads already share with the main
 * thread, read at scrape time: a scrape costs no database query and no
 * message to the workers. Ledger-wide numbers (keys per state, ETA) are
 * `bucket-migrate report`'s job: counting the ledger on every scrape would
 * scan it.
 */
export async function startMetrics(options: {
  port: number;
  host?: string;
  counters: Int32Array;
  stage: string;
}): Promise<MetricsServer> {
  const { counters } = options;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bucket_migrate_' });

  // Counters only go up; prom-client's Counter has no set, so each scrape adds what changed.
  const seen = new Map<CounterName, number>();
  const keys = new Counter({
    name: 'bucket_migrate_keys_total',
    help: 'Keys (or, for retried_steps, failed steps that will be retried) by outcome in this run',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      for (const name of OUTCOMES) {
        const now = read(counters, name);
        const delta = now - (seen.get(name) ?? 0);
        if (delta > 0) this.inc({ outcome: snake(name) }, delta);
        seen.set(name, now);
      }
    },
  });
  for (const name of OUTCOMES) keys.inc({ outcome: snake(name) }, 0);
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
  new Gauge({ name: 'bucket_migrate_run_info', help: 'This run: always 1', labelNames: ['stage'], registers: [registry] }).set({ stage: options.stage }, 1);

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
    setRunId: (runId) => registry.setDefaultLabels({ run_id: String(runId) }),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
