import pg from 'pg';

/** Runs one query against a test database on a short-lived connection. */
export async function query<T extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Ledger rows by state. */
export async function ledgerStates(url: string, schema = 'bucket_migrate'): Promise<Record<string, number>> {
  const rows = await query<{ state: string; n: number }>(url, `select state, count(*)::int as n from ${schema}.migration_ledger group by state`);
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

/**
 * Like {@link query}, but past the delete guard's trigger, as the tool's own
 * connections write (`bucket_migrate.tool_write`): how a test makes a row
 * name a deleted object on purpose, a write the guard would otherwise
 * redirect to the copy.
 */
export async function queryPastGuard<T extends pg.QueryResultRow = Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, options: '-c bucket_migrate.tool_write=on' });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}
