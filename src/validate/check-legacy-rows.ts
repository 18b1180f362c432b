import { sql } from 'kysely';
import { FatalError } from '../errors.js';
import { compareKeys } from './compare-keys.js';
import { listObjects, type ListedObject } from './list-objects.js';
import { brokenReason, namedKey, objectUrl } from './spellings.js';
import { withCursor } from './table-cursor.js';
import { EXCEPTION_STATES, Findings, checkResult, plural, type CheckResult } from './validate-types.js';
import { appTable, ledgerTable, type ValidateContext } from './validate-context.js';

export const LEGACY_ROWS =
  'no table row names a key under SOURCE_PREFIX (in any spelling), except rows of keys left failed, conflict, missing, archived or reverted; a row whose object is gone is broken';

/** Rows per FETCH, as in the target check. */
const PAGE_ROWS = 5_000;

interface LegacyRow {
  row_id: string;
  path: string;
  key: string;
  ledger_id: number | null;
  state: string | null;
  last_error: string | null;
}

/**
 * Check 1: no row of the table still names a key under the source prefix,
 * in any spelling (`image/k`, `/image/k`, `s3://bucket/image/k`, an https
 * URL; see `namedKey`), except rows whose key the ledger left behind on
 * purpose (failed, conflict, missing, archived, reverted), and rows naming a
 * superseded key in another spelling (never rewritten; the source is kept):
 * those are known exceptions, failures only with `--strict`.
 *
 * Each such row is also checked against a listing of the source prefix, to
 * tell broken from unfinished: a row naming a source object that does not
 * exist is reported as exactly that ("row 7 names s3://legacy-s3/image/k,
 * which does not exist"), whatever the ledger says about its key. A key
 * that was already missing when planned (`missing`) stays a known exception.
 *
 * The rows (sorted by the key they name, in byte order) and the listing
 * (S3's order, the same) are merged a page at a time, as in the target
 * check: constant memory, no HEAD per row, one listing request per 1,000
 * objects left under the prefix (few, once the migration is done).
 */
export async function checkLegacyRows(ctx: ValidateContext): Promise<CheckResult> {
  const { config } = ctx;
  const key = namedKey(config.source, sql`t.${sql.id(config.pathColumn)}`);
  const query = sql<LegacyRow>`
    select named.row_id, named.path, named.key, l.id as ledger_id, l.state, l.last_error
    from (
      select t.${sql.id(config.idColumn)} as id, t.${sql.id(config.idColumn)}::text as row_id,
             t.${sql.id(config.pathColumn)}::text as path, ${key} as key
      from ${appTable(config)} as t
    ) as named
    left join ${ledgerTable(config)} as l on l.src_key = named.key
    where named.key is not null
    order by named.key collate "C", named.id
  `;

  const failures = new Findings();
  const exceptions = new Findings();
  let legacy = 0;
  let broken = 0;
  let otherSpellings = 0;

  await withCursor(ctx.db, query, PAGE_ROWS, async (rows) => {
    const objects = listObjects(ctx.s3, config.source.bucket, config.source.prefix);
    let object: ListedObject | undefined;
    const nextObject = async () => {
      const next = await objects.next();
      object = next.done ? undefined : next.value;
    };
    await nextObject();
    let previousKey: string | undefined;
    for await (const row of rows) {
      legacy += 1;
      if (row.path !== row.key) otherSpellings += 1;
      if (previousKey !== undefined && compareKeys(previousKey, row.key) > 0) {
        throw new FatalError(`the database does not sort paths in UTF-8 byte order (${previousKey} before ${row.key}): is it a UTF-8 database?`);
      }
      previousKey = row.key;
      while (object && compareKeys(object.key, row.key) < 0) await nextObject();
      const exists = object !== undefined && compareKeys(object.key, row.key) === 0;
      const base = { key: row.path, rowId: row.row_id, ledgerId: row.ledger_id ?? undefined, state: row.state };
      const isException = row.state !== null && (EXCEPTION_STATES as readonly string[]).includes(row.state);
      if (!exists) {
        broken += 1;
        const missingObject = objectUrl(config.source, row.key);
        const sentence = brokenReason(row.row_id, missingObject, row.path, row.key);
        if (row.state === 'missing') {
          exceptions.add({ ...base, missingObject, reason: `${sentence}: known exception: key is missing${row.last_error ? ` (${row.last_error})` : ''}` });
        } else {
          failures.add({ ...base, missingObject, reason: `${sentence}${row.state ? ` (ledger: key ${row.state})` : ''}` });
        }
        continue;
      }
      if (row.state === 'superseded' && row.path !== row.key) {
        // The tool never rewrites a row in another spelling (it refuses to
        // delete a source such a row names), and a superseded key keeps its
        // source: this row is left to the operator, like those of failed keys.
        exceptions.add({ ...base, reason: `known exception: row names the key as ${row.path}, a spelling the tool never rewrites; the key is superseded, so its source is kept` });
        continue;
      }
      (isException ? exceptions : failures).add({ ...base, reason: reasonFor(row.state, row.last_error) });
    }
  });

  return checkResult('legacyRows', LEGACY_ROWS, {
    summary:
      `${plural(failures.count, 'row')} naming a key under ${config.source.prefix} without a known reason` +
      `${broken ? ` (${broken} broken: the object is gone)` : ''}` +
      `, ${plural(exceptions.count, 'known exception')}${ctx.strict && exceptions.count ? ' (failing: --strict)' : ''}`,
    checked: legacy,
    failures,
    exceptions,
    strict: ctx.strict,
    details: { legacyRows: legacy, brokenRows: broken, otherSpellings },
  });
}

function reasonFor(state: string | null, error: string | null): string {
  if (state === null) return 'row points at a legacy key the ledger does not know (not planned): run plan, then execute';
  if ((EXCEPTION_STATES as readonly string[]).includes(state)) return `known exception: key is ${state}${error ? ` (${error})` : ''}`;
  if (state === 'done') return 'row points at a legacy key the ledger says is done: the row was set back after the move';
  if (state === 'superseded') return 'row points at a legacy key the ledger says no row pointed at any more (superseded): re-run plan, then execute --finish-superseded';
  return `key is still ${state}: the migration has not finished`;
}
