/**
 * How a claim finds its rows in O(batch): from the claimable index of each
 * state it asks for (migration 0008-claim-by-state: `(id) where state =
 * '<state>'`), in id order, never walking rows in other live states. A
 * `--keep-source` claim would otherwise walk past every key parked in
 * `db_updated`, and `--delete-only` past every pending one.
 *
 * The states are spelled as literals (they come from the fixed list of live
 * states, checked here), so the planner matches each state's partial index.
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
 * A subquery of up to `limit` ids of rows in `states` meeting `condition`
 * (on alias `l`), locked `for update skip locked`: one ordered scan of each
 * state's index, taken in {@link claimOrder} until `limit` rows are found
 * (the arms of the UNION ALL run one after another and stop at the limit).
 */
export function claimableIds(ledger: RawBuilder<unknown>, states: readonly LiveState[], limit: number, condition: RawBuilder<unknown>): RawBuilder<{ id: number }> {
  const arms = claimOrder(states).map(
    (state) => sql`select id from (
      select l.id from ${ledger} as l
      where l.state = ${sql.lit(state)} and ${condition}
      order by l.id
      limit ${limit}
      for update skip locked) as ${sql.id(`claim_${state}`)}`,
  );
  if (arms.length === 0) return sql<{ id: number }>`(select null::bigint as id where false)`;
  return sql<{ id: number }>`(${sql.join(arms, sql` union all `)} limit ${limit})`;
}

/**
 * Whether any row in `states` exists (leased or not): one probe of the
 * first entry of each state's index.
 */
export function anyInStates(ledger: RawBuilder<unknown>, states: readonly LiveState[]): RawBuilder<boolean> {
  const probes = claimOrder(states).map((state) => sql`(select l.id from ${ledger} as l where l.state = ${sql.lit(state)} order by l.id limit 1)`);
  if (probes.length === 0) return sql<boolean>`false`;
  return sql<boolean>`(coalesce(${sql.join(probes)}) is not null)`;
}
