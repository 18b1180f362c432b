import { setTimeout as sleep } from 'node:timers/promises';

/** Settings of the adaptive in-flight limit of one worker thread. */
export interface LimiterConfig {
  /** The ceiling of requests in flight (`--concurrency`). */
  maxInFlight: number;
  /** The floor it never drops below. */
  minInFlight?: number;
  /** Requests per second for this thread, or 0 for no cap (`--max-rps` / threads). */
  maxRps?: number;
}

/**
 * Additive-increase, multiplicative-decrease concurrency control: a throttle
 * answer halves the in-flight limit, each run of successes as long as the
 * limit adds one. An optional token bucket caps the request rate.
 */
export class AdaptiveLimiter {
  private limitValue: number;
  private inFlight = 0;
  private successesSinceChange = 0;
  private readonly waiters: Array<() => void> = [];
  private readonly min: number;
  private readonly max: number;
  private readonly rps: number;
  private tokens: number;
  private lastRefill = Date.now();
  /** Throttle answers seen, for reporting. */
  throttles = 0;

  constructor(config: LimiterConfig) {
    this.max = Math.max(1, config.maxInFlight);
    this.min = Math.max(1, Math.min(config.minInFlight ?? 1, this.max));
    this.limitValue = this.max;
    this.rps = config.maxRps ?? 0;
    this.tokens = this.rps;
  }

  /** The current in-flight limit. */
  get limit(): number {
    return this.limitValue;
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

  /** Records a success: after a full window of them, allow one more in flight. */
  onSuccess(): void {
    if (++this.successesSinceChange >= this.limitValue && this.limitValue < this.max) {
      this.limitValue += 1;
      this.successesSinceChange = 0;
      this.wake();
    }
  }

  /** Records a throttle answer: halve the limit. */
  onThrottle(): void {
    this.throttles += 1;
    this.limitValue = Math.max(this.min, Math.floor(this.limitValue / 2));
    this.successesSinceChange = 0;
  }

  private async acquire(): Promise<void> {
    if (this.inFlight < this.limitValue) this.inFlight += 1;
    // A slot handed over by `wake` is already counted.
    else await new Promise<void>((resolve) => this.waiters.push(resolve));
    if (this.rps > 0) await this.takeToken();
  }

  private async takeToken(): Promise<void> {
    for (;;) {
      const now = Date.now();
      this.tokens = Math.min(this.rps, this.tokens + ((now - this.lastRefill) / 1000) * this.rps);
      this.lastRefill = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      await sleep(Math.ceil(((1 - this.tokens) / this.rps) * 1000));
    }
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
