import type pg from 'pg';
import { queryOnce } from '../../scripts/lib/pg-once.js';

/** Runs one query against a test database on a short-lived connection. */
export const query = queryOnce;

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
  return queryOnce<T>(url, text, values, { sessionOptions: '-c bucket_migrate.tool_write=on' });
}
