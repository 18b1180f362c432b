/**
 * Worker thread for test/limiter.test.ts: posts 'ready', waits for the
 * go (`startAt` and `until`, wall-clock ms), then takes tokens from a shared
 * rate bucket with `lanes` concurrent takers until `until`, or until it has
 * taken `most`, and posts back the wall-clock time of each.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SharedRateBucket } from '../../src/s3/rate-bucket.js';

interface Job {
  buffer: SharedArrayBuffer;
  lanes: number;
  most: number;
}

const job = workerData as Job;
const bucket = SharedRateBucket.open(job.buffer);
const now = () => performance.timeOrigin + performance.now();
const stamps: number[] = [];

// Start together, so the threads compete from the first token.
const go = new Promise<{ startAt: number; until: number }>((resolve) => parentPort!.once('message', resolve));
parentPort!.postMessage('ready');
const { startAt, until } = await go;
await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAt - now())));
await Promise.all(
  Array.from({ length: job.lanes }, async () => {
    while (now() < until && stamps.length < job.most) {
      await bucket.take();
      stamps.push(now());
    }
  }),
);
parentPort!.postMessage(stamps);
