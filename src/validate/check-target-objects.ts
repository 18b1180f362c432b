import { sql } from 'kysely';
import { FatalError } from '../errors.js';
import { compareKeys } from './compare-keys.js';
import { listObjects, type ListedObject } from './list-objects.js';
import { mismatch, type Expected } from './object-match.js';
import { withCursor } from './table-cursor.js';
import { Findings, checkResult, plural, type CheckResult } from './validate-types.js';
import { brokenReason, namedKey, objectUrl } from './spellings.js';
import { appTable, ledgerTable, type ValidateContext } from './validate-context.js';

export const TARGET_OBJECTS = 'every row naming a key under TARGET_PREFIX (in any spelling) names an existing target object, of the size and ETag the ledger recorded';

/** Rows per FETCH: big enough to amortise round trips, small enough to be nothing in memory. */
const PAGE_ROWS = 5_000;

interface TargetRow extends Expected {
  row_id: string;
  /** The path as stored. */
  path: string;
  /** The target key it names (the path itself, or another spelling of it: see `namedKey`). */
  key: string;
}

/**
 * The rows naming a key under the target prefix (in any spelling, see
 * `namedKey`), sorted by that key in byte order, each with what the ledger
 * recorded about its key. The ledger row is found by its source key (unique
 * index), derived from the key by swapping the prefix, which is how plan
 * derives every destination key.
 */
export function targetRowsQuery(ctx: ValidateContext, order: 'path' | 'random', limit?: number, samplePercent?: number) {
  const { config } = ctx;
  const tp = config.target.prefix;
  const key = namedKey(config.target, sql`t.${sql.id(config.pathColumn)}`);
  return sql<TargetRow>`
    select named.row_id, named.path, named.key, l.state, l.src_size, l.src_etag, l.dst_etag
    from (
      select t.${sql.id(config.idColumn)} as id, t.${sql.id(config.idColumn)}::text as row_id,
             t.${sql.id(config.pathColumn)}::text as path, ${key} as key
      from ${appTable(config)} as t ${samplePercent !== undefined ? sql`tablesample system (${samplePercent}::float4)` : sql``}
    ) as named
    left join ${ledgerTable(config)} as l
      on l.src_key = ${config.source.prefix}::text || substr(named.key, char_length(${tp}::text) + 1)
     and l.dst_key = named.key
    where named.key is not null
    ${order === 'path' ? sql`order by named.key collate "C", named.id` : sql`order by random()`}
    ${limit !== undefined ? sql`limit ${limit}` : sql``}
  `;
}

/**
 * Check 2, full: merges a sorted listing of the target prefix with the
 * table's target rows sorted the same way, like a merge join. Each side is
 * streamed a page at a time, so memory is constant and no object is HEADed:
 * the cost is one listing request per 1,000 objects and one sorted scan.
 */
export async function checkTargetObjects(ctx: ValidateContext): Promise<CheckResult> {
  const { config } = ctx;
  const failures = new Findings();
  let rowsChecked = 0;
  let objectsListed = 0;
  let unreferenced = 0;

  await withCursor(ctx.db, targetRowsQuery(ctx, 'path'), PAGE_ROWS, async (rows) => {
    const objects = listObjects(ctx.s3, config.target.bucket, config.target.prefix);
    let object: ListedObject | undefined;
    let previousKey: string | undefined;
    const nextObject = async () => {
      const next = await objects.next();
      object = next.done ? undefined : next.value;
      if (object) {
        objectsListed += 1;
        if (previousKey !== undefined && compareKeys(previousKey, object.key) >= 0) {
          throw new FatalError(`the listing of s3://${config.target.bucket} is not in UTF-8 binary order (${previousKey} before ${object.key}): cannot merge`);
        }
        previousKey = object.key;
      }
    };
    await nextObject();
    let previousPath: string | undefined;
    let matchedObject = false;
    for await (const row of rows) {
      rowsChecked += 1;
      if (previousPath !== undefined && compareKeys(previousPath, row.key) > 0) {
        // Postgres' "C" collation is byte order only in a UTF-8 database.
        throw new FatalError(`the database does not sort paths in UTF-8 byte order (${previousPath} before ${row.key}): is it a UTF-8 database?`);
      }
      previousPath = row.key;
      while (object && compareKeys(object.key, row.key) < 0) {
        if (!matchedObject) unreferenced += 1;
        matchedObject = false;
        await nextObject();
      }
      if (!object || compareKeys(object.key, row.key) !== 0) {
        const missingObject = objectUrl(config.target, row.key);
        failures.add({ key: row.path, rowId: row.row_id, state: row.state, missingObject, reason: brokenReason(row.row_id, missingObject, row.path, row.key) });
        continue;
      }
      matchedObject = true;
      const wrong = mismatch(row, object);
      if (wrong) failures.add({ key: row.path, rowId: row.row_id, state: row.state, reason: wrong });
    }
    // The rest of the listing: objects no row names (orphans moved, superseded copies).
    while (object) {
      if (!matchedObject) unreferenced += 1;
      matchedObject = false;
      await nextObject();
    }
  });

  return checkResult('targetObjects', TARGET_OBJECTS, {
    summary: `${plural(rowsChecked, 'row')} under ${config.target.prefix} merged with ${plural(objectsListed, 'listed object')}: ${failures.count} without a matching object`,
    checked: rowsChecked,
    failures,
    strict: ctx.strict,
    details: { mode: 'full', objectsListed, unreferencedObjects: unreferenced },
  });
}
