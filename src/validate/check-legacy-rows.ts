import { sql } from 'kysely';
import { EXCEPTION_STATES, Findings, MAX_LISTED, checkResult, plural, type CheckResult } from './validate-types.js';
import { appTable, ledgerTable, type ValidateContext } from './validate-context.js';

export const LEGACY_ROWS = 'no table row points under SOURCE_PREFIX, except rows of keys left failed, conflict, missing, archived or reverted';

/**
 * Check 1: no row of the table still names a key under the source prefix,
 * except rows whose key the ledger left behind on purpose (failed, conflict,
 * missing, archived, reverted): those are known exceptions, failures only with `--strict`.
 *
 * The table is read directly, not the ledger's account of it. The work is
 * done by Postgres (a count, then the first rows of each kind), so nothing
 * here grows with the table.
 */
export async function checkLegacyRows(ctx: ValidateContext): Promise<CheckResult> {
  const { config } = ctx;
  const t = appTable(config);
  const id = sql.id(config.idColumn);
  const path = sql.id(config.pathColumn);
  const ledger = ledgerTable(config);
  const exception = sql`l.state = any(${EXCEPTION_STATES as unknown as string[]}::text[])`;
  const legacy = sql`
    from ${t} as t left join ${ledger} as l on l.src_key = t.${path}::text
    where starts_with(t.${path}::text, ${config.source.prefix})
  `;
  const counts = (await sql<{ legacy: number; exceptions: number }>`
    select count(*)::bigint as legacy, count(*) filter (where ${exception})::bigint as exceptions ${legacy}
  `.execute(ctx.db)).rows[0]!;

  const failures = new Findings();
  const exceptions = new Findings();
  const list = async (wantExceptions: boolean, into: Findings, total: number) => {
    if (total === 0) return;
    const rows = (await sql<{ row_id: string; path: string; ledger_id: number | null; state: string | null; last_error: string | null }>`
      select t.${id}::text as row_id, t.${path}::text as path, l.id as ledger_id, l.state, l.last_error ${legacy}
        and ${wantExceptions ? exception : sql`not coalesce(${exception}, false)`}
      order by t.${id} limit ${MAX_LISTED}
    `.execute(ctx.db)).rows;
    for (const r of rows) {
      into.add({
        key: r.path,
        rowId: r.row_id,
        ledgerId: r.ledger_id ?? undefined,
        state: r.state,
        reason: reasonFor(r.state, r.last_error),
      });
    }
    // Only the first rows were fetched; the count comes from the query above.
    into.count = total;
  };
  await list(false, failures, counts.legacy - counts.exceptions);
  await list(true, exceptions, counts.exceptions);

  return checkResult('legacyRows', LEGACY_ROWS, {
    summary:
      `${plural(counts.legacy - counts.exceptions, 'row')} under ${config.source.prefix} without a known reason` +
      `, ${plural(counts.exceptions, 'known exception')}${ctx.strict && counts.exceptions ? ' (failing: --strict)' : ''}`,
    checked: counts.legacy,
    failures,
    exceptions,
    strict: ctx.strict,
    details: { legacyRows: counts.legacy },
  });
}

function reasonFor(state: string | null, error: string | null): string {
  if (state === null) return 'row points at a legacy key the ledger does not know (not planned): run plan, then execute';
  if ((EXCEPTION_STATES as readonly string[]).includes(state)) return `known exception: key is ${state}${error ? ` (${error})` : ''}`;
  if (state === 'done') return 'row points at a legacy key the ledger says is done: the row was set back after the move';
  if (state === 'superseded') return 'row points at a legacy key the ledger says no row pointed at any more (superseded): re-run plan';
  return `key is still ${state}: the migration has not finished`;
}
