import { sql, type Kysely } from 'kysely';
import { LIVE_STATES, stateIn, type LiveState } from '../ledger/state-machine.js';

/** HH:MM:SS UTC of a timestamp. */
const clock = (at: Date) => `${at.toISOString().slice(11, 19)} UTC`;

/**
 * What a process with nothing to claim is waiting for, as one phrase for its
 * progress line: the keys other runs hold leases on (run, host, pid, until
 * when) and the keys backing off after a failure (until when). Undefined
 * when nothing is held or backing off.
 *
 * Asked only while a worker of this process finds nothing to claim, when
 * every live key of its stage is leased or backing off, so the rows it reads
 * are few; the runs rows name each lease's owner by its process id.
 */
export async function describeWaiting(
  db: Kysely<any>,
  schema: string,
  runId: number,
  states: readonly LiveState[] = LIVE_STATES,
): Promise<string | undefined> {
  const ledger = sql.id(schema, 'migration_ledger');
  const wanted = sql`${stateIn(LIVE_STATES)} and state = any(${states as unknown as string[]}::text[])`;
  const held = (await sql<{ owner: string; keys: number; until: Date; run_id: number | null; host: string | null; pid: number | null }>`
    with held as (
      select split_part(locked_by, '/', 1) as owner, count(*)::int as keys, max(locked_until) as until
      from ${ledger}
      where ${wanted} and locked_by is not null and locked_until >= now()
      group by 1
    )
    select h.owner, h.keys, h.until, r.id as run_id, r.host, r.pid
    from held as h left join ${sql.id(schema, 'runs')} as r on r.process_id = h.owner
    where r.id is distinct from ${runId}
    order by h.keys desc, h.owner
    limit 3
  `.execute(db)).rows;
  const backoff = (await sql<{ keys: number; next: Date | null }>`
    select count(*)::int as keys, min(not_before) as next
    from ${ledger}
    where ${wanted} and not_before > now() and (locked_until is null or locked_until < now())
  `.execute(db)).rows[0];
  const parts = held.map(
    (h) =>
      `${h.keys} keys leased by ${h.run_id !== null ? `run ${h.run_id} (${h.host ?? '?'}, pid ${h.pid ?? '?'})` : h.owner} until ${clock(h.until)}`,
  );
  if (backoff && backoff.keys > 0 && backoff.next) parts.push(`${backoff.keys} keys backing off after failures until ${clock(backoff.next)} at the earliest`);
  return parts.length ? `waiting: ${parts.join('; ')}` : undefined;
}
