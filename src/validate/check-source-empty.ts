import { sql } from 'kysely';
import { FatalError } from '../errors.js';
import { ledgerBoundaries, rangesBetween } from '../listing/key-ranges.js';
import { forEachRangePage } from '../listing/list-ranges.js';
import { describeS3Error } from '../s3/errors.js';
import { VALIDATE_LIST_RANGES, sortFindings } from './check-target-objects.js';
import { EXCEPTION_STATES, Findings, checkResult, plural, type CheckResult } from './validate-types.js';
import { ledgerTable, type ValidateContext } from './validate-context.js';

export const SOURCE_EMPTY = 'the source bucket holds nothing under SOURCE_PREFIX, except keys the ledger left on purpose';

// Keys whose source object stays by design: the exceptions, and
// superseded keys (no row pointed at them any more, so they were copied but
// their source was not deleted).
const LEFT_ON_PURPOSE = new Set<string>([...EXCEPTION_STATES, 'superseded']);

/**
 * Check 3: lists the source prefix and looks each page's keys up in the
 * ledger by its unique source-key index. Keys the ledger left on purpose
 * are known exceptions; keys it does not know are "not planned" (added
 * after the last plan, or orphans a plain `plan` cannot see) and fail.
 */
export async function checkSourceEmpty(ctx: ValidateContext): Promise<CheckResult> {
  const { config } = ctx;
  const failures = new Findings();
  const exceptions = new Findings();
  let listed = 0;
  let folderMarkers = 0;
  let notPlanned = 0;

  const judge = async (keys: string[]) => {
    if (keys.length === 0) return;
    const known = new Map(
      (await sql<{ src_key: string; id: number; state: string; last_error: string | null }>`
        select src_key, id, state, last_error from ${ledgerTable(config)} where src_key = any(${keys}::text[])
      `.execute(ctx.db)).rows.map((r) => [r.src_key, r]),
    );
    for (const key of keys) {
      const entry = known.get(key);
      if (!entry) {
        notPlanned += 1;
        failures.add({ key, state: null, reason: 'not planned: the ledger does not know this key (added after the last plan?): run plan --list, then execute' });
      } else if (LEFT_ON_PURPOSE.has(entry.state)) {
        exceptions.add({ key, ledgerId: entry.id, state: entry.state, reason: `known exception: key is ${entry.state}${entry.last_error ? ` (${entry.last_error})` : ''}` });
      } else if (entry.state === 'done') {
        failures.add({ key, ledgerId: entry.id, state: entry.state, reason: 'the ledger says done, but the source object exists (deleted late, or written again since)' });
      } else {
        const why = entry.state === 'db_updated' ? 'the rows point at the copy; execute (or execute --delete-only) deletes this source' : 'the migration has not finished';
        failures.add({ key, ledgerId: entry.id, state: entry.state, reason: `still ${entry.state}: ${why}` });
      }
    }
  };

  // Listed as key ranges at once (boundaries from the ledger's source
  // keys); each page is judged as it comes, so memory stays constant.
  const boundaries = await ledgerBoundaries(ctx.db, config.ledgerSchema, 'src_key', VALIDATE_LIST_RANGES);
  await forEachRangePage(
    {
      s3: ctx.s3,
      bucket: config.source.bucket,
      prefix: config.source.prefix,
      onError: (err) => new FatalError(`listing s3://${config.source.bucket}/${config.source.prefix} failed: ${describeS3Error(err)}`),
    },
    rangesBetween(boundaries),
    async (page) => {
      const keys: string[] = [];
      for (const object of page) {
        // A "folder" marker is not an object anyone points at; plan skips them too.
        if (object.Key!.endsWith('/')) folderMarkers += 1;
        else keys.push(object.Key!);
      }
      listed += keys.length;
      await judge(keys);
    },
  );
  sortFindings(failures);
  sortFindings(exceptions);

  return checkResult('sourceEmpty', SOURCE_EMPTY, {
    summary:
      `${plural(listed, 'object')} left under s3://${config.source.bucket}/${config.source.prefix}: ${failures.count} unexpected` +
      `${notPlanned ? ` (${notPlanned} not planned)` : ''}, ${plural(exceptions.count, 'known exception')}${ctx.strict && exceptions.count ? ' (failing: --strict)' : ''}`,
    checked: listed,
    failures,
    exceptions,
    strict: ctx.strict,
    details: { objectsListed: listed, notPlanned, folderMarkers },
  });
}
