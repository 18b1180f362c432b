/**
 * How a claim finds its rows in O(batch): one ordered scan of the claimable
 * index per state asked for (migration 0010 keys that index by
 * `(state, id)`), never a walk over rows in other live states. A
 * `--keep-source` claim would otherwise walk past every key parked in
 * `db_updated`, and `--delete-only` past every pending one.
 */
import { sql, type RawBuilder } from 'kysely';
import { LIVE_STATES, type LiveState } from './state-machine.js';

/**
 * The states in the order a claim takes them: the furthest along first, so
 * keys a crashed run left half-way (their sources and targets both exist)
 * are finished before new ones start.
 */
export function claimOrder(states: readonly LiveState[]): LiveState[] {
  const rank = (s: LiveState) => LIVE_STATES.indexOf(s);
  return [...new Set(states)].filter((s) => rank(s) >= 0).sort((a, b) => rank(b) - rank(a));
}

/**
 * `from`-clause rows `(id)` of up to `limit` claimable ledger rows in
 * `states` whose `where` is `condition`, read by one index scan per state.
 * `lock` adds `for update skip locked` (a claim); without it the rows are
 * only looked at (`hasLiveRows`).
 *
 * The state list is a parameter, and the literal live-state list repeats
 * the index's predicate so the planner can use the partial index.
 */
export function claimableIds(
  ledger: RawBuilder<unknown>,
  states: readonly LiveState[],
  limit: number,
  condition: RawBuilder<unknown>,
  lock: boolean,
): RawBuilder<{ id: number }> {
  const live = sql.join(LIVE_STATES.map((s) => sql.lit(s)));
  return sql<{ id: number }>`
    (select c.id
     from unnest(${claimOrder(states)}::text[]) as s(state)
     cross join lateral (
       select id from ${ledger} as l
       where l.state = s.state and l.state in (${live}) and ${condition}
       order by id
       limit ${limit}
       ${lock ? sql`for update skip locked` : sql``}
     ) as c
     limit ${limit})`;
}
