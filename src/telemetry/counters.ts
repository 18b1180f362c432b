/**
 * Counters shared by the worker threads and the main thread through a
 * SharedArrayBuffer: the main thread reads them for progress without asking
 * the workers or the database.
 */
export const COUNTER = {
  claimed: 0,
  copied: 1,
  dbUpdated: 2,
  done: 3,
  conflict: 4,
  missing: 5,
  superseded: 6,
  failed: 7,
  retriedSteps: 8,
  requests: 9,
  retries: 10,
  throttles: 11,
  inFlightLimit: 12,
  /** Set to 1 by the main thread: finish the batches in hand, claim no more. */
  stop: 13,
  archived: 14,
  /** Keys sent back to be committed again: rows added since the plan still named them. */
  requeued: 15,
  /** Pipeline lanes that found nothing to claim and wait (leases held elsewhere, backoff): progress says what for. */
  waitingLanes: 16,
  /** Rows the index guard moved to the copy after their source was deleted (its remaining window). */
  repaired: 17,
} as const;

export type CounterName = keyof typeof COUNTER;

const SIZE = Object.keys(COUNTER).length;

/** Creates the shared counters. */
export function createCounters(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(SIZE * Int32Array.BYTES_PER_ELEMENT));
}

export function bump(counters: Int32Array, name: CounterName, by = 1): void {
  if (by !== 0) Atomics.add(counters, COUNTER[name], by);
}

export function read(counters: Int32Array, name: CounterName): number {
  return Atomics.load(counters, COUNTER[name]);
}

export function write(counters: Int32Array, name: CounterName, value: number): void {
  Atomics.store(counters, COUNTER[name], value);
}
