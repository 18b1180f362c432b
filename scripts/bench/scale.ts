/**
 * The bench's figures for issue 14 (speed as users run it, and at scale),
 * each printed beside its target:
 *
 * - `rclone move` (server-side, between the same two buckets, same N) as a
 *   peer, when rclone is installed;
 * - the default commands (`plan`, then `execute`, no `--list`): whole-process
 *   rate against the ceiling and rclone, S3 requests per key from execute's
 *   summary, and the rate in the first 2 s after the first claim against the
 *   steady rate (sampled from ledger_counts every 100 ms, which costs nothing);
 * - `plan` against a bare CREATE TABLE AS SELECT of the same rows plus its
 *   two index builds, in the same database;
 * - parallel listing against one listing chain, through a proxy that adds
 *   30 ms to every request.
 */
import { spawn, spawnSync } from 'node:child_process';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { rangesBetween } from '../../src/listing/key-ranges.js';
import { listRangePages } from '../../src/listing/list-ranges.js';
import { compareKeys } from '../../src/validate/compare-keys.js';

/** One figure and its target. */
export interface ScaleFigure {
  name: string;
  value: number | null;
  unit: string;
  target: string;
  /** Whether the target holds; null when it cannot be told. */
  holds: boolean | null;
  note?: string;
}

/** Whether rclone is on the PATH. */
export function rcloneInstalled(): boolean {
  return spawnSync('rclone', ['version'], { stdio: 'ignore' }).status === 0;
}

/**
 * `rclone move` of `from` to `to` on one S3 endpoint: server-side copies
 * (same remote), then deletes. Configured through environment variables
 * only, so no rclone.conf is written. Returns the wall-clock seconds.
 */
export async function rcloneMove(
  s3: { endpoint: string; accessKeyId: string; secretAccessKey: string; region: string },
  from: { bucket: string; prefix: string },
  to: { bucket: string; prefix: string },
  transfers = 64,
): Promise<number> {
  // No AWS_* from this environment (an AWS_CA_BUNDLE, say, would make rclone
  // load a CA bundle for a plain-HTTP endpoint and fail): only the remote below.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('AWS_') && !name.startsWith('RCLONE_')));
  const env = {
    ...inherited,
    RCLONE_CONFIG_BM_TYPE: 's3',
    RCLONE_CONFIG_BM_PROVIDER: 'Minio',
    RCLONE_CONFIG_BM_ENDPOINT: s3.endpoint,
    RCLONE_CONFIG_BM_ACCESS_KEY_ID: s3.accessKeyId,
    RCLONE_CONFIG_BM_SECRET_ACCESS_KEY: s3.secretAccessKey,
    RCLONE_CONFIG_BM_REGION: s3.region,
  };
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      'rclone',
      ['move', `bm:${from.bucket}/${from.prefix}`, `bm:${to.bucket}/${to.prefix}`, '--transfers', String(transfers), '--checkers', String(transfers), '--s3-no-check-bucket', '--no-traverse'],
      { env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`rclone move exited with ${code}: ${stderr.slice(-2000)}`))));
  });
  return (performance.now() - started) / 1000;
}

/**
 * Samples a ledger's progress every 100 ms from ledger_counts (keys claimed
 * at least once, keys done) while `run` runs, and derives the rate in the
 * first 2 s after the first claim and the steady rate (keys done between
 * 25% and 75% of the total, per second).
 */
export async function sampleRates<T>(url: string, schema: string, total: number, run: () => Promise<T>): Promise<{ result: T; firstTwoSeconds: number | null; steady: number | null }> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  const samples: Array<{ t: number; claimed: number; done: number }> = [];
  let stop = false;
  const poll = (async () => {
    while (!stop) {
      try {
        const r = await client.query<{ claimed: string; done: string }>(
          `select coalesce(sum(n) filter (where kind = 'attempts' and label <> '0'), 0)::text as claimed,
                  coalesce(sum(n) filter (where kind = 'state' and label = 'done'), 0)::text as done
           from "${schema.replace(/"/g, '""')}".ledger_counts`,
        );
        samples.push({ t: performance.now(), claimed: Number(r.rows[0]!.claimed), done: Number(r.rows[0]!.done) });
      } catch {
        // The schema may not exist yet (plan still running).
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  try {
    const result = await run();
    return { result, ...ratesFrom(samples, total) };
  } finally {
    stop = true;
    await poll;
    await client.end().catch(() => undefined);
  }
}

function ratesFrom(samples: Array<{ t: number; claimed: number; done: number }>, total: number): { firstTwoSeconds: number | null; steady: number | null } {
  const first = samples.find((s) => s.claimed > 0);
  if (!first) return { firstTwoSeconds: null, steady: null };
  const at = (t: number) => samples.filter((s) => s.t <= t).at(-1);
  const two = at(first.t + 2000);
  const firstTwoSeconds = two && two.t > first.t ? (two.done - first.done) / ((two.t - first.t) / 1000) : null;
  const quarter = samples.find((s) => s.done >= total * 0.25);
  const threeQuarters = samples.find((s) => s.done >= total * 0.75);
  const steady = quarter && threeQuarters && threeQuarters.t > quarter.t ? (threeQuarters.done - quarter.done) / ((threeQuarters.t - quarter.t) / 1000) : null;
  return { firstTwoSeconds, steady };
}

/**
 * What the database itself takes for plan's work on `table`: one CREATE
 * TABLE AS SELECT of the keys (sorted, destination derived, the ids per key
 * aggregated, row ids numbered) and its two index builds (primary key,
 * unique source key), in one session with plan's settings. Seconds.
 */
export async function ctasBaseline(url: string, table: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(`drop table if exists bench_ctas`);
    await client.query(`set work_mem = '256MB'; set maintenance_work_mem = '256MB'`);
    const started = performance.now();
    await client.query(`
      create table bench_ctas with (fillfactor = 70) as
      select row_number() over (order by path collate "C") as id, path::text as src_key,
             'avatar/' || substr(path, 7) as dst_key, array_agg(id::text) as row_ids
      from ${table} where starts_with(path, 'image/')
      group by path order by path collate "C"`);
    await client.query(`alter table bench_ctas add primary key (id)`);
    await client.query(`create unique index bench_ctas_src_key on bench_ctas (src_key)`);
    const seconds = (performance.now() - started) / 1000;
    await client.query(`drop table bench_ctas`);
    return seconds;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Puts `count` one-byte objects `prefix` + n (high concurrency): a prefix to list. */
export async function seedListing(s3: S3Client, bucket: string, prefix: string, count: number, concurrency = 64): Promise<string[]> {
  const keys = Array.from({ length: count }, (_, i) => `${prefix}obj-${String(i).padStart(7, '0')}-${(i * 7919) % 1000}`);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < keys.length; i = next++) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: keys[i], Body: 'x' }));
    }),
  );
  return keys;
}

/**
 * Lists `prefix` through `s3` once as one chain and once as `ranges` key
 * ranges at once (boundaries: quantiles of the sorted keys, as the ledger
 * gives them). Checks both saw `keys.length` keys. Seconds of each.
 */
export async function listingSpeed(s3: S3Client, bucket: string, prefix: string, keys: string[], ranges: number): Promise<{ single: number; parallel: number }> {
  const sorted = [...keys].sort(compareKeys);
  const boundaries = Array.from({ length: ranges - 1 }, (_, i) => sorted[Math.floor(((i + 1) * sorted.length) / ranges)]!);
  const time = async (bounds: string[]) => {
    const started = performance.now();
    let n = 0;
    await Promise.all(
      rangesBetween(bounds).map(async (range) => {
        for await (const page of listRangePages({ s3, bucket, prefix }, range)) n += page.length;
      }),
    );
    if (n !== keys.length) throw new Error(`listing: ${n} keys seen, ${keys.length} expected`);
    return (performance.now() - started) / 1000;
  };
  const single = await time([]);
  const parallel = await time(boundaries);
  return { single, parallel };
}

/** The figures as a table, each beside its target. */
export function formatScaleFigures(figures: ScaleFigure[]): string {
  const rows = figures.map((f) => [
    f.name,
    f.value === null ? 'n/a' : `${f.value >= 100 ? f.value.toFixed(0) : f.value.toFixed(2)} ${f.unit}`.trim(),
    f.target,
    f.holds === null ? '?' : f.holds ? 'holds' : 'MISSES',
    f.note ?? '',
  ]);
  const head = ['figure', 'measured', 'target', '', 'note'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return ['Scale figures (issue 14)', line(head), ...rows.map(line)].join('\n');
}
