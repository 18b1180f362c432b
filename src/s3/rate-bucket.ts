import { setTimeout as sleep } from 'node:timers/promises';

/*
 * Layout of the shared buffer (BigInt64Array, microseconds):
 * [0] theoretical arrival time of the next request (GCRA's TAT),
 * [1] interval between requests at the cap (1e6 / rps),
 * [2] burst tolerance: how far ahead of the cap a request may go.
 * The settings live in the buffer too, so a worker thread needs nothing but
 * the buffer to take part.
 */
const TAT = 0;
const INTERVAL = 1;
const TOLERANCE = 2;
const SLOTS = 3;

/**
 * Wall-clock time in microseconds. Each worker thread has its own
 * `performance.timeOrigin`, but origin plus `now()` is wall-clock time in
 * every thread, so all threads agree on it (to well under a millisecond) and
 * it is finer than `Date.now()`.
 */
function nowMicros(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/**
 * A token bucket shared by every thread of a process: `--max-rps` caps the
 * process as a whole, however its requests are spread over its threads.
 *
 * It is GCRA (the "generic cell rate algorithm"): a single number, the
 * theoretical arrival time (TAT) of the next request, in a SharedArrayBuffer,
 * advanced by one interval per request with a compare-and-swap. That is a
 * token bucket of `burst` tokens refilled at `rps` per second, without a
 * lock and without a refill timer. A thread reserves its slot at once and
 * then sleeps until it comes, so waiting threads are served in the order
 * they asked and none spins.
 *
 * Create it in the main thread (`SharedRateBucket.create`), send its
 * `buffer` to the workers (workerData or a task), and open it there with
 * `SharedRateBucket.open`.
 */
export class SharedRateBucket {
  private readonly cells: BigInt64Array;

  private constructor(readonly buffer: SharedArrayBuffer) {
    this.cells = new BigInt64Array(buffer);
  }

  /**
   * A new bucket of `rps` requests per second. `burst` (default: a tenth of
   * a second's worth, at least 1) is how many may go at once after a quiet
   * spell: over any window of `w` seconds at most `rps * w + burst` pass.
   */
  static create(rps: number, burst = Math.max(1, rps / 10)): SharedRateBucket {
    if (!(rps > 0) || !Number.isFinite(rps)) throw new RangeError(`rate bucket: rps must be a positive number, got ${rps}`);
    if (!(burst >= 1)) throw new RangeError(`rate bucket: burst must be at least 1, got ${burst}`);
    const bucket = new SharedRateBucket(new SharedArrayBuffer(SLOTS * BigInt64Array.BYTES_PER_ELEMENT));
    const interval = 1e6 / rps;
    Atomics.store(bucket.cells, INTERVAL, BigInt(Math.max(1, Math.round(interval))));
    // The first request takes no tolerance: `burst` requests fit in `(burst - 1)` intervals.
    Atomics.store(bucket.cells, TOLERANCE, BigInt(Math.round((burst - 1) * interval)));
    Atomics.store(bucket.cells, TAT, 0n);
    return bucket;
  }

  /** Opens, in any thread, a bucket made by `create` (from its `buffer`). */
  static open(buffer: SharedArrayBuffer): SharedRateBucket {
    if (buffer.byteLength !== SLOTS * BigInt64Array.BYTES_PER_ELEMENT) throw new TypeError('rate bucket: not a rate bucket buffer');
    return new SharedRateBucket(buffer);
  }

  /** The cap, in requests per second. */
  get rps(): number {
    return 1e6 / Number(Atomics.load(this.cells, INTERVAL));
  }

  /**
   * Reserves the next slot and returns how many milliseconds until it comes
   * (0: go now). A reservation cannot be given back: call it only for a
   * request that will be sent.
   */
  reserve(): number {
    return Math.max(0, Number(this.reserveAt() - nowMicros()) / 1000);
  }

  /** Reserves the next slot; returns when it comes (microseconds, wall clock), now or earlier meaning at once. */
  private reserveAt(): bigint {
    const interval = Atomics.load(this.cells, INTERVAL);
    const tolerance = Atomics.load(this.cells, TOLERANCE);
    for (;;) {
      const now = nowMicros();
      const tat = Atomics.load(this.cells, TAT);
      // After a quiet spell the schedule restarts from now: unused time is not saved up beyond the burst.
      const start = tat > now ? tat : now;
      const next = start + interval;
      if (Atomics.compareExchange(this.cells, TAT, tat, next) !== tat) continue;
      const at = next - interval - tolerance;
      return at > now ? at : now;
    }
  }

  /**
   * Waits for the next slot: at once when the bucket has a token, else
   * sleeps until it comes. A taker that wakes well after its slot (its
   * thread was stalled: GC, a starved CPU) reserves again rather than go:
   * all the takers of a stalled thread wake together, and going at once
   * they would send a stall's worth of requests in one burst.
   */
  async take(): Promise<void> {
    const late = Atomics.load(this.cells, TOLERANCE) + Atomics.load(this.cells, INTERVAL);
    for (;;) {
      const at = this.reserveAt();
      const wait = Number(at - nowMicros()) / 1000;
      if (wait <= 0) return;
      await sleep(Math.ceil(wait));
      if (nowMicros() - at <= late) return;
    }
  }
}
