import { setTimeout as sleep } from 'node:timers/promises';
import type { SharedRateBucket } from './rate-bucket.js';

/** Settings of the adaptive in-flight limit of one worker thread. */
export interface LimiterConfig {
  /** The ceiling of requests in flight (`--concurrency`). */
  maxInFlight: number;
  /** The floor it never drops below. */
  minInFlight?: number;
  /**
   * The fixed cap of the whole process (`--max-rps`), shared with the
   * limiters of its other threads; none when absent.
   */
  bucket?: SharedRateBucket;
  /** The adaptive rate cap never drops below this (requests per second). */
  minRps?: number;
}

/** Width of one bucket of the request-rate window, and how many there are (1 s). */
const BUCKET_MS = 100;
const BUCKETS = 10;
/** Successes are kept this many buckets (5 s): see `onThrottle`. */
const SUCCESS_BUCKETS = 50;
/** One cut per this long: the throttles of one burst are one signal, not many. */
const DECREASE_COOLDOWN_MS = 250;
/** After a throttle the rate is capped at this fraction of the rate that drew it. */
const RATE_DECREASE = 0.7;
/**
 * Each second without a throttle, below the rate that drew the last one, the
 * cap rises by this fraction of that rate (at least `MIN_STEP_RPS`): about
 * 60 s from the cut back to where the server said no. Slow on purpose: a
 * server's burst lets a client run above its limit until the burst is spent,
 * with no 503 to say so, so a fast climb overshoots by as much as it
 * undershot and the rate averages out at the limit instead of below it.
 * At 0.5% the climb from the cut leaves more unused than a burst of a
 * second's worth can hold, so on average the rate stays below the limit
 * (at 1% it still went over: 60.3/s under 60/s in one run of three).
 */
const RATE_STEP = 0.005;
const MIN_STEP_RPS = 0.05;
/** Past the rate that drew the last throttle, the server has room again: each second raises the cap by this fraction (and at least 1 request/s). */
const RATE_PROBE = 0.05;
/** A cap above this is no cap. */
const LIFT_RPS = 100_000;

/**
 * Additive-increase, multiplicative-decrease control of one thread's S3
 * traffic, on two levers:
 *
 * - Requests in flight: a throttle answer (503 SlowDown, 429) halves the
 *   limit; each run of successes as long as the limit adds one.
 * - Request rate: a throttle also caps the rate at 70% of the rate that drew
 *   it (or of what the server took over 5 s, if more); each second without one raises
 *   the cap by 0.5% of that rate, and once past it (the server has found more
 *   room) by 5% a second, compounding (a minute or two more lifts it). This
 *   is what settles the rate below a server's limit: on a fast network a few
 *   requests in flight can still exceed it, so the in-flight limit alone
 *   cannot.
 *
 * One burst of throttles is one decrease: when the server starts refusing,
 * every request in flight comes back refused at once, and halving for each
 * would collapse the limit to its floor. So a throttle counts only if its
 * request was sent after the last decrease, and at most one decrease happens
 * per 250 ms.
 *
 * `bucket` (from `--max-rps`) is a fixed cap under all of this, one token
 * bucket for the whole process: a request takes a token from it after
 * passing this thread's own caps.
 */
export class AdaptiveLimiter {
  private limitValue: number;
  private inFlight = 0;
  private successesSinceChange = 0;
  private readonly waiters: Array<() => void> = [];
  private readonly min: number;
  private readonly max: number;
  private readonly bucket: SharedRateBucket | undefined;
  private readonly minRps: number;
  /** The adaptive rate cap; Infinity when none. */
  private adaptiveRps = Infinity;
  /** The rate that drew the last throttle: the cap climbs slowly up to it, faster past it. */
  private ceilingRps = Infinity;
  private lastDecrease = -Infinity;
  private lastIncrease = 0;
  private tokens = 0;
  private lastRefill = Date.now();
  private readonly started = new Array<number>(BUCKETS).fill(0);
  private readonly succeeded = new Array<number>(SUCCESS_BUCKETS).fill(0);
  private bucketAt = Math.floor(Date.now() / BUCKET_MS);
  /** Throttle answers seen, for reporting. */
  throttles = 0;

  constructor(config: LimiterConfig) {
    this.max = Math.max(1, config.maxInFlight);
    this.min = Math.max(1, Math.min(config.minInFlight ?? 1, this.max));
    this.limitValue = this.max;
    this.bucket = config.bucket;
    this.minRps = Math.max(0.5, config.minRps ?? 1);
  }

  /** The current in-flight limit. */
  get limit(): number {
    return this.limitValue;
  }

  /** The request rate in force for this thread (requests per second), or Infinity when uncapped. */
  get rateCap(): number {
    return Math.min(this.bucket?.rps ?? Infinity, this.adaptiveRps);
  }

  /** Requests started over the last second. */
  get recentRate(): number {
    this.roll(Date.now());
    return this.started.reduce((a, b) => a + b, 0);
  }

  /** Successes per second over the last 5 s: what the server did take. */
  get recentSuccessRate(): number {
    this.roll(Date.now());
    return this.succeeded.reduce((a, b) => a + b, 0) / ((SUCCESS_BUCKETS * BUCKET_MS) / 1000);
  }

  /** Runs `fn` once a slot (and, with a rate cap, a token) is free. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  /** Records a success: after a full window of them, allow one more in flight; raise the rate cap with time. */
  onSuccess(): void {
    this.roll(Date.now());
    this.succeeded[this.bucketAt % SUCCESS_BUCKETS]! += 1;
    if (++this.successesSinceChange >= this.limitValue && this.limitValue < this.max) {
      this.limitValue += 1;
      this.successesSinceChange = 0;
      this.wake();
    }
    if (this.adaptiveRps !== Infinity) {
      const now = Date.now();
      const seconds = (now - this.lastIncrease) / 1000;
      if (seconds >= 1) {
        for (let s = Math.floor(seconds); s > 0; s--) {
          if (this.adaptiveRps < this.ceilingRps) {
            const step = Math.max(MIN_STEP_RPS, this.ceilingRps * RATE_STEP);
            this.adaptiveRps = Math.min(this.ceilingRps, this.adaptiveRps + step);
          } else this.adaptiveRps += Math.max(1, this.adaptiveRps * RATE_PROBE);
        }
        this.lastIncrease = now;
        // After a minute or two without a throttle the cap means nothing any more.
        if (this.adaptiveRps > LIFT_RPS) this.adaptiveRps = Infinity;
      }
    }
  }

  /**
   * Records a throttle answer: halve the in-flight limit and cap the rate,
   * once per burst. `sentAt` is when the refused request was sent: one sent
   * before the last decrease says nothing about the rate since, and is not
   * acted on (as TCP reacts once per window, not once per lost packet).
   */
  onThrottle(sentAt?: number): void {
    this.throttles += 1;
    const now = Date.now();
    this.successesSinceChange = 0;
    if (sentAt !== undefined && sentAt > 0 && sentAt < this.lastDecrease) return;
    if (now - this.lastDecrease < DECREASE_COOLDOWN_MS) return;
    this.lastDecrease = now;
    this.lastIncrease = now;
    this.limitValue = Math.max(this.min, Math.floor(this.limitValue / 2));
    const drawn = Math.min(this.recentRate, this.adaptiveRps);
    // Not below 70% of what the server took over the last 5 s: on a loaded
    // machine requests leave in clumps, a clump empties the server's bucket
    // even below its limit, and cut after cut (each measured on the rate the
    // last one left) spiralled the cap far below the limit (9 to 18/s under
    // 60/s), where a slow climb leaves it. Over 5 s, the server's burst adds
    // at most a fifth of a second's worth, and 70% of that is below the limit.
    const taken = this.recentSuccessRate;
    this.ceilingRps = Math.max(this.minRps, drawn, taken);
    this.adaptiveRps = Math.max(this.minRps, drawn * RATE_DECREASE, taken * RATE_DECREASE);
    // Start from an empty bucket: no burst right after being told to slow down.
    this.tokens = 0;
    this.lastRefill = now;
  }

  private async acquire(): Promise<void> {
    if (this.inFlight < this.limitValue) this.inFlight += 1;
    // A slot handed over by `wake` is already counted.
    else await new Promise<void>((resolve) => this.waiters.push(resolve));
    // This thread's own cap first: a token of the shared bucket is a promise
    // to send, and must not be held while waiting for this thread's cap.
    if (this.adaptiveRps !== Infinity) await this.takeToken();
    if (this.bucket) await this.bucket.take();
    this.roll(Date.now());
    this.started[this.bucketAt % BUCKETS]! += 1;
  }

  /** Takes a token of this thread's adaptive cap. */
  private async takeToken(): Promise<void> {
    for (;;) {
      const rps = this.adaptiveRps;
      if (rps === Infinity) return;
      const now = Date.now();
      // Burst: at most a tenth of a second's worth, so a cap holds over short windows too.
      const burst = Math.max(1, rps / 10);
      this.tokens = Math.min(burst, this.tokens + ((now - this.lastRefill) / 1000) * rps);
      this.lastRefill = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      await sleep(Math.max(1, Math.ceil(((1 - this.tokens) / rps) * 1000)));
    }
  }

  /** Advances the rate window to `now`, clearing buckets that fell out of it. */
  private roll(now: number): void {
    const bucket = Math.floor(now / BUCKET_MS);
    if (bucket - this.bucketAt >= SUCCESS_BUCKETS) {
      this.started.fill(0);
      this.succeeded.fill(0);
    } else {
      for (let b = this.bucketAt + 1; b <= bucket; b++) {
        this.started[b % BUCKETS] = 0;
        this.succeeded[b % SUCCESS_BUCKETS] = 0;
      }
    }
    if (bucket > this.bucketAt) this.bucketAt = bucket;
  }

  private release(): void {
    this.inFlight -= 1;
    this.wake();
  }

  private wake(): void {
    while (this.waiters.length > 0 && this.inFlight < this.limitValue) {
      this.inFlight += 1;
      this.waiters.shift()!();
    }
  }
}
