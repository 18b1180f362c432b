/**
 * The RSS phase (--rss): seed --rss-count keys into buckets C and D and
 * compare execute's peak RSS there with the --count runs at the same
 * --threads. Flat memory means a ratio near 1.
 */
import { emptyBucket, type BenchContext, type Location } from './bench-context.js';
import { mustSucceed } from './children.js';
import { runExecute } from './execute-phase.js';
import type { ExecuteRun, RssResult } from './report.js';

export async function runRss(ctx: BenchContext, executes: ExecuteRun[], threads: number): Promise<RssResult> {
  const { options } = ctx;
  const C: Location = { bucket: ctx.buckets[2]!, prefix: 'image/' };
  const D: Location = { bucket: ctx.buckets[3]!, prefix: 'avatar/' };
  const rssEnv = { ...ctx.base, MIGRATE_TABLE: 'bench_rss_avatars' };
  ctx.log(`RSS: seeding ${options.rssCount} objects (this takes a while)`);
  const seeded = await ctx.children.runCli(['seed', '--count', String(options.rssCount), '--quiet'], {
    ...rssEnv,
    SOURCE_BUCKET: C.bucket,
    SOURCE_PREFIX: C.prefix,
    TARGET_BUCKET: D.bucket,
    TARGET_PREFIX: D.prefix,
  });
  mustSucceed('seed (RSS)', seeded);
  try {
    const big = await runExecute(ctx, { label: `execute --threads ${threads} (${options.rssCount} keys)`, variant: 'rss', threads, repetition: 0, env: rssEnv, count: options.rssCount, source: C, target: D });
    const small = executes.filter((r) => r.threads === threads && r.variant === 'threads' && r.maxRssKiB);
    const smallRss = Math.max(...small.map((r) => r.maxRssKiB!));
    return {
      threads,
      smallCount: options.count,
      smallMaxRssKiB: smallRss,
      bigCount: options.rssCount,
      bigMaxRssKiB: big.maxRssKiB ?? 0,
      ratio: (big.maxRssKiB ?? 0) / smallRss,
      bigRun: big,
    };
  } finally {
    await emptyBucket(ctx.client, C.bucket);
    await emptyBucket(ctx.client, D.bucket);
  }
}
