/**
 * Fencing of destructive S3 requests by a batch's lease. A request that can
 * destroy something (execute's `DeleteObjects`, revert's target deletes, a
 * copy that replaces the destination under `--overwrite`) is sent only for
 * keys that a statement has just confirmed still leased to this worker, and
 * only while the lease, counted locally from when that statement was sent,
 * leaves room for the whole request: it carries an abort timeout that ends
 * before the lease could pass to another worker. A worker frozen past its
 * lease (SIGSTOP, a long GC pause, a suspended VM) therefore wakes to find
 * its destructive requests refused here, before they leave.
 */

/**
 * A batch's lease as the worker sees it: the deadline counted from when the
 * last claim or renewal was SENT (the server's clock may have started it
 * later, never earlier), and whether a renewal found a key taken.
 */
export class LeaseClock {
  deadline: number;
  lost = false;
  /** Lease time a destructive step must have to spare: a tenth of the lease, 0.2 s to 10 s. */
  readonly marginSeconds: number;
  constructor(sentAt: number, readonly leaseSeconds: number) {
    this.deadline = sentAt + leaseSeconds * 1000;
    this.marginSeconds = Math.min(10, Math.max(0.2, leaseSeconds / 10));
  }
  /** Keys this batch gave back (released, failed, refused): not renewed, not counted as lost. */
  readonly released = new Set<number>();
  /** Marks keys as given back, before the statement that releases them is sent. */
  release<T extends number | { id: number }>(items: T[]): T[] {
    for (const item of items) this.released.add(typeof item === 'number' ? item : item.id);
    return items;
  }
  /** A statement sent at `sentAt` renewed the lease of every key this batch still holds. */
  renewedAt(sentAt: number): void {
    this.deadline = Math.max(this.deadline, sentAt + this.leaseSeconds * 1000);
  }
  /**
   * The heartbeat's answer for the `asked` keys it renewed at `sentAt`. A
   * key another worker holds marks the lease lost. The deadline moves only
   * when every key asked for was renewed: a key that was not may have been
   * taken over and finished by another run while this one was frozen
   * (its lease then reads as free, not as another's), so the old deadline
   * stands and this batch's destructive steps stop when it passes.
   */
  heartbeat(sentAt: number, asked: number, result: { renewed: number; lost: number }): void {
    if (result.lost > 0) this.lost = true;
    else if (result.renewed >= asked) this.renewedAt(sentAt);
  }
  /**
   * The abort signal a destructive request leaves with: its timeout ends
   * the margin before the local deadline. Throws {@link LeaseTooShort} when
   * the lease is lost or leaves no room. Call it inside the request's thunk,
   * so it is checked when the request is about to leave (after the
   * limiter's queue) and again on each retry.
   */
  destructiveSignal(): AbortSignal {
    const left = this.deadline - this.marginSeconds * 1000 - Date.now();
    if (this.lost || left <= 0) throw new LeaseTooShort();
    return AbortSignal.timeout(Math.min(left, MAX_DESTRUCTIVE_TIMEOUT_MS));
  }
}

/** The S3 request timeout of a destructive request is at most this (the client's default request timeout). */
const MAX_DESTRUCTIVE_TIMEOUT_MS = 60_000;

/** Thrown instead of sending a destructive request the lease leaves no room for. */
export class LeaseTooShort extends Error {
  // A 409-like status makes sendWithRetry treat it as permanent: not retried.
  readonly $metadata = { httpStatusCode: 409 };
  constructor() {
    super('lease too short to send a destructive request');
    this.name = 'LeaseTooShort';
  }
}

/**
 * Keeps a batch's leases renewed while the batch is worked on: a long batch
 * (big multipart copies, a slow server) must not lose its keys to another
 * worker halfway. Every third of the lease (at least a second apart) the
 * keys of `ids` not yet given back are renewed with `renew` (one statement),
 * and its answer moves the local deadline (see {@link LeaseClock.heartbeat}).
 * A renewal that fails is let go: the deadline simply does not move. Returns
 * the function that stops the renewals.
 */
export function renewWhileWorking(
  lease: LeaseClock,
  ids: number[],
  renew: (held: number[]) => Promise<{ renewed: number; lost: number }>,
): () => void {
  const timer = setInterval(() => {
    const sentAt = Date.now();
    const held = ids.filter((id) => !lease.released.has(id));
    void renew(held)
      .then((result) => lease.heartbeat(sentAt, held.length, result))
      .catch(() => undefined);
  }, Math.max(1_000, (lease.leaseSeconds * 1000) / 3));
  timer.unref();
  return () => clearInterval(timer);
}
