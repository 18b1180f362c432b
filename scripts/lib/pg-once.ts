/**
 * One Postgres connection for one piece of work, closed whatever happens:
 * how the scripts and the tests talk to a database outside the tool.
 */
import pg from 'pg';

/** Connection settings besides the URL. */
export interface PgOnceConfig {
  /** Give up connecting after this long (default: pg's, no limit). */
  connectTimeoutMs?: number;
  /** Server settings for the session (`-c name=value ...`). */
  sessionOptions?: string;
}

/** Runs `fn` on a fresh connection to `url`, then closes it. */
export async function withPgClient<T>(url: string, fn: (client: pg.Client) => Promise<T>, config: PgOnceConfig = {}): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: config.connectTimeoutMs, options: config.sessionOptions });
  // An idle client whose server goes away emits 'error'; unhandled, that
  // would crash the process instead of failing the one call.
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs one query on a fresh connection and returns its rows. */
export async function queryOnce<T extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, values: unknown[] = [], config: PgOnceConfig = {}): Promise<T[]> {
  return withPgClient(url, async (client) => (await client.query<T>(text, values)).rows, config);
}
