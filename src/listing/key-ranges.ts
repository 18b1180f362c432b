/**
 * Splitting a prefix into key ranges that can be listed at once.
 *
 * One ListObjectsV2 continuation chain is one request in flight: at AWS
 * latencies (20 to 100 ms a page of 1,000) 300M keys take hours. S3 lists
 * from any key on (`StartAfter`), so K chains, each over its own range of
 * keys, list K pages at a time. The boundaries are keys the ledger already
 * holds (sorted by the database), so the ranges hold about equal numbers of
 * keys; any boundaries give a correct result, since each range is bounded
 * in S3's own order (`compareKeys`).
 */
import { sql, type Kysely } from 'kysely';
import { quoteIdent } from '../config/identifiers.js';
import { compareKeys } from '../validate/compare-keys.js';

/** Keys in `(after, through]`, in S3's order; an open end is undefined. */
export interface KeyRange {
  after?: string;
  through?: string;
}

/** Chains listed at once unless told otherwise. */
export const DEFAULT_LIST_RANGES = 16;

/** The ranges between sorted, distinct boundaries: K−1 boundaries give K ranges covering every key. */
export function rangesBetween(boundaries: readonly string[]): KeyRange[] {
  const sorted = [...new Set(boundaries)].sort(compareKeys);
  const ranges: KeyRange[] = [];
  let after: string | undefined;
  for (const through of sorted) {
    ranges.push({ after, through });
    after = through;
  }
  ranges.push({ after });
  return ranges;
}

/** Whether `key` is in `range`. */
export function inRange(range: KeyRange, key: string): boolean {
  return (range.after === undefined || compareKeys(key, range.after) > 0) && (range.through === undefined || compareKeys(key, range.through) <= 0);
}

/**
 * Up to `count − 1` boundaries splitting the ledger's keys (`src_key` or
 * `dst_key`) into `count` ranges of about equal size: quantiles of a random
 * sample of about 200 keys per range (TABLESAMPLE SYSTEM, sized from the
 * table's statistics), so the cost does not grow with the ledger. An empty
 * or small ledger gives fewer boundaries; none means one range.
 */
export async function ledgerBoundaries(db: Kysely<any>, schema: string, column: 'src_key' | 'dst_key', count: number): Promise<string[]> {
  if (count <= 1) return [];
  const ledgerName = `${quoteIdent(schema)}.migration_ledger`;
  const stats = await sql<{ rows: number }>`
    select greatest(reltuples, 0)::float8 as rows from pg_class where oid = to_regclass(${ledgerName})
  `.execute(db).catch(() => ({ rows: [] as Array<{ rows: number }> }));
  const estimated = stats.rows[0]?.rows ?? 0;
  // Below ~200k rows read them all (fast); above, a sample of pages.
  const percent = estimated > 200_000 ? Math.min(100, (100 * 200 * count * 4) / estimated) : 100;
  const fractions = Array.from({ length: count - 1 }, (_, i) => (i + 1) / count);
  const col = sql.id(column);
  const result = await sql<{ bounds: string[] | null }>`
    select percentile_disc(${fractions}::float8[]) within group (order by ${col} collate "C") as bounds
    from ${sql.id(schema, 'migration_ledger')} ${percent < 100 ? sql`tablesample system (${percent}::float4)` : sql``}
  `.execute(db);
  return [...new Set((result.rows[0]?.bounds ?? []).filter((b): b is string => typeof b === 'string'))];
}
