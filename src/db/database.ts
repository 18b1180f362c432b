import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { redactUrl } from '../config/redact.js';
import { FatalError, oneLine } from '../errors.js';

// Postgres bigint and numeric arrive as strings by default; counts and ids in
// this tool stay well inside 2^53, so numbers are friendlier.
pg.types.setTypeParser(20, (value) => Number(value));

/** Options for a connection pool. */
export interface DatabaseConfig {
  url: string;
  /** Connections in the pool. */
  max?: number;
  /** `application_name`, visible in pg_stat_activity. */
  applicationName?: string;
  /** Called after every statement with its SQL, duration and whether it failed (statement-latency metrics). */
  onStatement?: (sqlText: string, seconds: number, failed: boolean) => void;
}

/**
 * Opens a kysely instance over a pg pool. Queries are mostly written with
 * `sql` templates: the claim and commit statements are CTEs that read best as
 * SQL, and identifiers always pass through `sql.id`.
 */
export function createDatabase(config: DatabaseConfig): Kysely<any> {
  const pool = new pg.Pool({
    connectionString: config.url,
    max: config.max ?? 4,
    application_name: config.applicationName ?? 'bucket-migrate',
    connectionTimeoutMillis: 10_000,
    // Marks the tool's own writes for the guard trigger (src/guard/guard.ts),
    // which lets them through: the compare-and-set commits of execute and
    // revert must not be redirected or recorded as application writes.
    options: [urlOptions(config.url), '-c bucket_migrate.tool_write=on'].filter(Boolean).join(' '),
  });
  // An idle client dropped by the server (pg_terminate_backend, failover)
  // emits 'error' on the pool; without a listener that kills the process.
  pool.on('error', () => undefined);
  // A client checked out of the pool (inside a transaction, or the
  // migrator's lock) has no pool listener: a termination arriving between
  // two of its statements would be an unhandled 'error' event and crash the
  // process. The error still reaches the next query on that client, as a
  // connection error that the callers' retries recognise.
  pool.on('connect', (client) => client.on('error', () => undefined));
  const onStatement = config.onStatement;
  return new Kysely<any>({
    dialect: new PostgresDialect({ pool }),
    log: onStatement ? (event) => onStatement(event.query.sql, event.queryDurationMillis / 1000, event.level === 'error') : undefined,
  });
}

/** The `options` a database URL already carries (kept next to ours). */
function urlOptions(url: string): string | undefined {
  try {
    return new URL(url).searchParams.get('options') ?? undefined;
  } catch {
    return undefined;
  }
}

/** Checks the database answers, turning connection failures into one line. */
export async function checkConnection(db: Kysely<any>, url: string): Promise<void> {
  try {
    await db.selectNoFrom((eb) => eb.val(1).as('one')).execute();
  } catch (err) {
    throw new FatalError(`cannot connect to the database at ${redactUrl(url)}: ${oneLine(err)}`, 2);
  }
}

const TRANSIENT_PG = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02',
  '57P03',
  '53300', // too_many_connections
  '08000',
  '08003',
  '08006',
  '08001',
  '08004',
]);

/** True for errors worth retrying: lost connections, deadlocks, serialization. */
export function isTransientDbError(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (e?.code && TRANSIENT_PG.has(e.code)) return true;
  if (e?.code && ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT'].includes(e.code)) return true;
  const message = e?.message ?? '';
  return /Connection terminated|connection.*(closed|ended|reset)|Client has encountered a connection error|timeout exceeded when trying to connect/i.test(message);
}
