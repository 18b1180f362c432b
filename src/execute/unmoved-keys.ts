import { sql, type Kysely } from 'kysely';
import { out } from '../util/output.js';

/** Keys named per state in execute's summary; the rest are a query away. */
export const NAMED_KEYS = 10;

const WHY: Record<string, string> = {
  missing: 'the source object does not exist',
  conflict: 'a different object is already at the destination',
};

/** The first keys of one refused state, oldest first, with the total. */
export async function listUnmoved(db: Kysely<any>, schema: string, state: 'missing' | 'conflict'): Promise<{ total: number; keys: Array<{ src_key: string; last_error: string | null }> }> {
  const ledger = sql.id(schema, 'migration_ledger');
  const keys = (await sql<{ src_key: string; last_error: string | null }>`
    select src_key, last_error from ${ledger} where state = ${state} order by id limit ${NAMED_KEYS}
  `.execute(db)).rows;
  const total = keys.length < NAMED_KEYS ? keys.length : ((await sql<{ n: number }>`select count(*)::int as n from ${ledger} where state = ${state}`.execute(db)).rows[0]?.n ?? 0);
  return { total, keys };
}

/**
 * Names the `missing` and `conflict` keys at the end of `execute` (the first
 * ten of each) and says where to see them all: counting them is not enough
 * to act on them.
 */
export async function printUnmovedKeys(db: Kysely<any>, schema: string): Promise<void> {
  for (const state of ['missing', 'conflict'] as const) {
    const { total, keys } = await listUnmoved(db, schema, state);
    if (total === 0) continue;
    out.info(`${total} keys ${state} (${WHY[state]})${total > keys.length ? `, the first ${keys.length}` : ''}:`, { state, keys_total: total });
    for (const k of keys) out.info(`  ${k.src_key}${k.last_error ? `: ${k.last_error}` : ''}`);
    out.info(
      `  all of them: bucket-migrate report --json | jq '.exceptions.${state}', or ` +
        `select src_key, dst_key, last_error from ${schema}.failures where state = '${state}' (docs/AUDIT.md)`,
    );
  }
}
