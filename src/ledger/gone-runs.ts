import type { Kysely } from 'kysely';
import { out } from '../util/output.js';
import { findGoneRuns } from './runs.js';
import { DEAD_PROCESS_GRACE_SECONDS, releaseDeadLeases } from './state-machine.js';

/**
 * Finds runs whose process is gone from this host (killed, crashed) and
 * releases their leases (in a few seconds, not at lease expiry), printing one line per release. Costs a
 * read of a few runs rows when there is none (the usual case).
 */
export async function releaseLeasesOfGoneRuns(db: Kysely<any>, schema: string): Promise<number> {
  const gone = await findGoneRuns(db, schema);
  if (gone.length === 0) return 0;
  const released = await releaseDeadLeases({ db, schema }, gone);
  out.info(
    `run${gone.length > 1 ? 's' : ''} ${gone.map((g) => g.id).join(', ')} ended without a word (process gone from this host): ` +
      `${released} leases released (their keys are claimable in ${DEAD_PROCESS_GRACE_SECONDS} s, once any request it had sent is done, not at lease expiry)`,
  );
  return released;
}

/**
 * Looks for gone runs every `seconds` while this run lasts, so a process
 * that survives another's kill -9 takes its keys over at once. Errors are
 * ignored: the next look retries, and leases expire anyway.
 */
export function watchGoneRuns(db: Kysely<any>, schema: string, seconds = 5): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    running = releaseLeasesOfGoneRuns(db, schema).catch(() => undefined);
  }, seconds * 1000);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
