import { setTimeout as sleep } from 'node:timers/promises';
import { classifyS3Error, isThrottle } from './errors.js';
import type { AdaptiveLimiter } from './limiter.js';

/** How hard to try one S3 request before the key is given back to the ledger. */
export interface RetryConfig {
  /** Tries per request, the first included. */
  attempts: number;
  /** First backoff in milliseconds; doubles each try, with full jitter. */
  baseDelayMs: number;
  /** The longest single backoff. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryConfig = { attempts: 4, baseDelayMs: 100, maxDelayMs: 5_000 };

/** Counters a worker reports. */
export interface RequestStats {
  requests: number;
  retries: number;
  throttles: number;
}

/**
 * Sends one S3 request through the limiter, retrying transient failures with
 * exponential backoff and full jitter. Throttles also shrink the limiter.
 * Permanent and fatal errors are thrown at once: retrying them only burns
 * requests.
 */
export async function sendWithRetry<T>(
  limiter: AdaptiveLimiter,
  stats: RequestStats,
  request: () => Promise<T>,
  retry: RetryConfig = DEFAULT_RETRY,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    // When the request actually left (after waiting for a slot and a token):
    // a throttle answer to a request sent before the limiter last slowed down
    // is old news and must not slow it down again.
    let sentAt = 0;
    try {
      stats.requests += 1;
      const result = await limiter.run(() => {
        sentAt = Date.now();
        return request();
      });
      limiter.onSuccess();
      return result;
    } catch (err) {
      if (isThrottle(err)) {
        stats.throttles += 1;
        limiter.onThrottle(sentAt);
      }
      if (classifyS3Error(err) !== 'transient' || attempt >= retry.attempts) throw err;
      stats.retries += 1;
      const ceiling = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1));
      await sleep(Math.random() * ceiling);
    }
  }
}
