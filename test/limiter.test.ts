/**
 * The `--max-rps` bucket across real worker threads: one SharedRateBucket,
 * several threads taking from it at once, each at its own pace. Their total
 * must reach the cap (nothing is lost to the sharing) and never pass it by
 * more than the burst, over the whole run and over any half second of it.
 */
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { AdaptiveLimiter } from '../src/s3/limiter.js';
import { SharedRateBucket } from '../src/s3/rate-bucket.js';

const WORKER = new URL('./support/rate-bucket-worker.js', import.meta.url);
const now = () => performance.timeOrigin + performance.now();

async function takeInThreads(bucket: SharedRateBucket, jobs: Array<{ lanes: number; most?: number }>, seconds: number): Promise<number[][]> {
  const workers = jobs.map(({ lanes, most }) => new Worker(WORKER, { workerData: { buffer: bucket.buffer, lanes, most: most ?? Infinity } }));
  const next = (worker: Worker) =>
    new Promise<unknown>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
  try {
    // Workers take a while to start on a loaded machine: start them all, then let them go together.
    await Promise.all(workers.map(next));
    const startAt = now() + 50;
    const done = workers.map((w) => next(w) as Promise<number[]>);
    for (const w of workers) w.postMessage({ startAt, until: startAt + seconds * 1000 });
    return await Promise.all(done);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** The most stamps in any window of `ms` milliseconds. */
function busiest(stamps: number[], ms: number): number {
  let most = 0;
  for (let i = 0, j = 0; j < stamps.length; j++) {
    while (stamps[j]! - stamps[i]! > ms) i++;
    most = Math.max(most, j - i + 1);
  }
  return most;
}

const RPS = 200;
const BURST = RPS / 10;
const SECONDS = 2;
// A thread's timer can fire a few milliseconds late, and two threads' late
// wake-ups can then land in one window: allow that much, no more.
const SLACK = 2 + RPS * 0.01;

t.test('one bucket, four threads: together they take the cap, and never more than the cap plus the burst', async (t) => {
  const bucket = SharedRateBucket.create(RPS);
  t.equal(bucket.rps, RPS, 'the cap is read back from the shared buffer');
  const perThread = await takeInThreads(bucket, [{ lanes: 1 }, { lanes: 2 }, { lanes: 8 }, { lanes: 32 }], SECONDS);
  const all = perThread.flat().sort((a, b) => a - b);
  const total = all.length;
  // From the first token to the last: takers that asked just before the end
  // were given slots after it, so the nominal duration would undercount.
  const span = (all[total - 1]! - all[0]!) / 1000;
  const rate = (total - BURST) / span;
  t.comment(`per thread: ${perThread.map((s) => s.length).join(', ')}; total ${total} in ${span.toFixed(2)} s (cap ${RPS}/s, burst ${BURST})`);
  t.ok(total <= RPS * span + BURST + SLACK, `total ${total} is within ${RPS}/s x ${span.toFixed(2)} s + burst ${BURST}`);
  t.ok(rate >= RPS * 0.9, `beyond the burst, ${rate.toFixed(1)}/s: the threads together reach the cap`);
  const half = busiest(all, 500);
  t.ok(half <= RPS / 2 + BURST + SLACK, `busiest half second: ${half} (cap ${RPS / 2} + burst ${BURST})`);
  t.ok(perThread.every((s) => s.length > 0), 'every thread got tokens');
});

t.test('a thread with little to do leaves its share to the others', async (t) => {
  const bucket = SharedRateBucket.create(RPS);
  const perThread = await takeInThreads(bucket, [{ lanes: 1, most: 10 }, { lanes: 4 }], SECONDS);
  const all = perThread.flat().sort((a, b) => a - b);
  const span = (all[all.length - 1]! - all[0]!) / 1000;
  t.comment(`per thread: ${perThread.map((s) => s.length).join(', ')} in ${span.toFixed(2)} s (cap ${RPS}/s)`);
  t.equal(perThread[0]!.length, 10, 'the idle thread took only what it needed');
  // Split evenly, the busy thread would have had RPS / 2.
  t.ok(perThread[1]!.length >= RPS * SECONDS * 0.9, `the busy thread took the rest: ${perThread[1]!.length}, more than half of ${RPS * SECONDS}`);
  t.ok(all.length <= RPS * span + BURST + SLACK, `total ${all.length} is within the cap plus the burst`);
});

t.test('after a quiet spell no more than the burst goes at once', async (t) => {
  const bucket = SharedRateBucket.create(100, 5);
  let immediate = 0;
  for (let i = 0; i < 20; i++) if (bucket.reserve() === 0) immediate++;
  t.equal(immediate, 5, 'five go at once, the rest are scheduled');
  t.throws(() => SharedRateBucket.create(0), RangeError, 'a cap of 0 is no bucket');
  t.throws(() => SharedRateBucket.open(new SharedArrayBuffer(8)), TypeError, 'a buffer of another shape is refused');
});

t.test('the limiter takes from the shared bucket after its own caps', async (t) => {
  const bucket = SharedRateBucket.create(50);
  const limiter = new AdaptiveLimiter({ maxInFlight: 16, bucket });
  t.equal(limiter.rateCap, 50, 'the cap in force is the bucket');
  const started = now();
  await Promise.all(Array.from({ length: 30 }, () => limiter.run(async () => undefined)));
  const seconds = (now() - started) / 1000;
  // 5 at once (the burst), then 25 more at 50/s.
  t.ok(seconds >= 0.45, `30 requests at 50/s with a burst of 5 take at least 0.5 s: ${seconds.toFixed(2)} s`);
});

t.test('after a throttle the rate cap drops to 70% of the rate that drew it', async (t) => {
  const limiter = new AdaptiveLimiter({ maxInFlight: 8 });
  await Promise.all(Array.from({ length: 20 }, () => limiter.run(async () => undefined)));
  limiter.onThrottle(Date.now());
  t.equal(limiter.rateCap, 14, '20 requests in the last second: capped at 14/s');
  t.equal(limiter.limit, 4, 'the in-flight limit is halved');
  limiter.onThrottle(Date.now());
  t.equal(limiter.rateCap, 14, 'a second throttle within the cooldown does not cut again');
});

t.test('after a cut the rate cap climbs 0.5% of the rate that drew it a second, then faster past it', async (t) => {
  const realNow = Date.now;
  let clock = realNow();
  Date.now = () => clock;
  t.teardown(() => void (Date.now = realNow));
  const limiter = new AdaptiveLimiter({ maxInFlight: 64 });
  await Promise.all(Array.from({ length: 100 }, () => limiter.run(async () => undefined)));
  limiter.onThrottle(clock);
  t.equal(limiter.rateCap, 70, '100 requests in the last second: capped at 70/s');
  clock += 1000;
  limiter.onSuccess();
  t.equal(limiter.rateCap, 70.5, 'one second later: +0.5% of 100');
  clock += 10_000;
  limiter.onSuccess();
  t.equal(limiter.rateCap, 75.5, 'ten more: +5');
  clock += 120_000;
  limiter.onSuccess();
  t.equal(limiter.rateCap > 100, true, `two minutes more: past the rate that drew the cut, climbing faster (${limiter.rateCap.toFixed(1)}/s)`);
});
