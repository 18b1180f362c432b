import { sql } from 'kysely';
import { UNSETTLED_STATES, stateIn } from '../ledger/state-machine.js';
import { iso } from '../report/collect-report.js';
import { Findings, MAX_LISTED, checkResult, plural, type CheckResult } from './validate-types.js';
import { ledgerTable, type ValidateContext } from './validate-context.js';

export const LEDGER_SETTLED = `the ledger has no key left in a non-terminal state (${UNSETTLED_STATES.join(', ')})`;

/**
 * Check 4: every key reached a terminal state. Live keys are listed with
 * their lease; leases that expired are grouped by owner, since an owner
 * with expired leases is a worker that died or stalled.
 */
export async function checkLedgerSettled(ctx: ValidateContext): Promise<CheckResult> {
  const ledger = ledgerTable(ctx.config);
  // `reverting`: a revert stopped half-way (rows back, target not yet deleted).
  const live = stateIn(UNSETTLED_STATES);
  const total = (await sql<{ n: number }>`select count(*)::bigint as n from ${ledger}`.execute(ctx.db)).rows[0]!.n;
  const count = (await sql<{ n: number }>`select count(*)::bigint as n from ${ledger} where ${live}`.execute(ctx.db)).rows[0]!.n;
  const failures = new Findings();
  const stale: Array<{ owner: string; keys: number; lockedUntil: string }> = [];
  if (count > 0) {
    const rows = (await sql<{ id: number; src_key: string; state: string; locked_by: string | null; locked_until: Date | null; expired: boolean | null; last_error: string | null }>`
      select id, src_key, state, locked_by, locked_until, locked_until < now() as expired, last_error
      from ${ledger} where ${live} order by id limit ${MAX_LISTED}
    `.execute(ctx.db)).rows;
    for (const r of rows) {
      const lease = r.locked_by ? `, ${r.expired ? 'stale lease' : 'leased'} by ${r.locked_by} until ${iso(r.locked_until)}` : '';
      failures.add({
        key: r.src_key,
        ledgerId: r.id,
        state: r.state,
        lockedBy: r.locked_by,
        lockedUntil: iso(r.locked_until),
        reason: `still ${r.state}${lease}${r.last_error ? ` (last error: ${r.last_error})` : ''}`,
      });
    }
    failures.count = count;
    const owners = (await sql<{ owner: string; keys: number; locked_until: Date }>`
      select locked_by as owner, count(*)::int as keys, max(locked_until) as locked_until
      from ${ledger} where ${live} and locked_by is not null and locked_until < now()
      group by locked_by order by keys desc, owner limit ${MAX_LISTED}
    `.execute(ctx.db)).rows;
    for (const o of owners) stale.push({ owner: o.owner, keys: o.keys, lockedUntil: iso(o.locked_until)! });
  }
  const staleKeys = stale.reduce((n, s) => n + s.keys, 0);
  return checkResult('ledgerSettled', LEDGER_SETTLED, {
    summary:
      `${count} of ${plural(total, 'key')} not in a terminal state` +
      (stale.length ? `; stale leases: ${stale.map((s) => `${s.owner} (${s.keys} keys, expired ${s.lockedUntil})`).join(', ')}` : ''),
    checked: total,
    failures,
    strict: ctx.strict,
    details: { liveKeys: count, staleLeaseKeys: staleKeys, staleLeases: stale },
  });
}
