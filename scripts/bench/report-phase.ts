/**
 * The report phase: the issue-14 figures beside their targets, the whole
 * BenchReport (machine, versions, every run), and publishing it: the JSON
 * files, the table on stdout and the README section between
 * <!-- bench:start --> and <!-- bench:end -->.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MINIO_MODULE, ensureMinioBinary, type LocalS3 } from '../lib/local-minio.js';
import type { BenchContext } from './bench-context.js';
import { ROOT } from './children.js';
import type { ListingResult } from './listing-phase.js';
import type { MovesResult } from './moves-phase.js';
import type { BenchOptions } from './options.js';
import type { PlanPhaseResult } from './plan-phase.js';
import type { ProfileSummary } from './profile.js';
import { formatTable, median, readmeSection, replaceReadmeSection, type BenchReport, type RssResult } from './report.js';
import { formatScaleFigures, type ScaleFigure } from './scale.js';

/** Everything the phases measured. */
export interface Measured {
  moves: MovesResult;
  planned?: PlanPhaseResult;
  rss?: RssResult;
  listing?: ListingResult;
}

/** The issue-14 figures: the default commands against the ceiling and rclone, plan against CTAS, parallel listing. */
export function scaleFigures(measured: Measured, listRanges: number): ScaleFigure[] {
  const { moves, planned, listing } = measured;
  const ceilingRate = median(moves.ceilings.flat().map((c) => c.objectsPerSecond));
  const rcloneRate = moves.rclone.length ? median(moves.rclone) : undefined;
  const figures: ScaleFigure[] = [];
  for (const d of moves.defaults) {
    const rate = d.run.objectsPerSecond;
    const perKey = d.run.s3Requests !== undefined ? d.run.s3Requests / d.run.objects : null;
    figures.push(
      { name: `default commands (plan + execute), ${d.run.objects} keys`, value: rate, unit: 'objects/s', target: '-', holds: null },
      { name: '  vs the ceiling', value: rate / ceilingRate, unit: 'x', target: '>= 0.85', holds: rate / ceilingRate >= 0.85 },
      { name: '  vs rclone move', value: rcloneRate ? rate / rcloneRate : null, unit: 'x', target: '>= 1.0', holds: rcloneRate ? rate / rcloneRate >= 1 : null, note: rcloneRate ? `rclone ${rcloneRate.toFixed(0)}/s` : 'rclone not installed' },
      { name: '  S3 requests per key (execute summary)', value: perKey, unit: '', target: '<= 1.05', holds: perKey === null ? null : perKey <= 1.05 },
      {
        name: '  first 2 s after the first claim vs steady',
        value: d.firstTwoSeconds !== null && d.steady ? d.firstTwoSeconds / d.steady : null,
        unit: 'x',
        target: 'steady within 2 s (~1.0)',
        holds: d.firstTwoSeconds !== null && d.steady ? d.firstTwoSeconds / d.steady >= 0.8 : null,
        note: `${d.firstTwoSeconds?.toFixed(0) ?? '?'}/s vs ${d.steady?.toFixed(0) ?? '?'}/s`,
      },
    );
  }
  if (planned?.ctasSeconds) {
    const { plan, ctasSeconds } = planned;
    figures.push({ name: `plan vs CTAS + 2 index builds, ${plan.rows} rows`, value: plan.seconds / ctasSeconds, unit: 'x', target: '<= 1.25', holds: plan.seconds / ctasSeconds <= 1.25, note: `plan ${plan.seconds.toFixed(2)} s, CTAS ${ctasSeconds.toFixed(2)} s` });
  }
  if (listing) {
    const speedup = listing.single / listing.parallel;
    figures.push({ name: `parallel listing (${listRanges} ranges), ${listing.count} keys, +30 ms/request`, value: speedup, unit: 'x faster', target: '>= 8', holds: speedup >= 8, note: `one chain ${listing.single.toFixed(1)} s, ranges ${listing.parallel.toFixed(1)} s` });
  }
  return figures;
}

/** The whole report of this run, figures included. */
export async function assembleReport(ctx: BenchContext, pgVersion: string, measured: Measured, figures: ScaleFigure[]): Promise<BenchReport> {
  const { moves, planned } = measured;
  const report: BenchReport & { scale?: unknown } = {
    date: ctx.startedAt.toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    machine: {
      cores: os.availableParallelism?.() ?? os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? '?',
      memoryBytes: os.totalmem(),
      platform: `${os.type()} ${os.release()} ${os.arch()}`,
      loadAverageAtStart: ctx.loadAtStart,
      loadAverageAtEnd: os.loadavg(),
    },
    versions: {
      node: process.versions.node,
      postgres: pgVersion,
      postgresKind: ctx.postgres.kind,
      s3: await minioVersion(ctx.s3),
      s3Kind: ctx.s3.kind,
      awsSdkClientS3: packageVersion('@aws-sdk/client-s3'),
      pg: packageVersion('pg'),
      kysely: packageVersion('kysely'),
      piscina: packageVersion('piscina'),
      bucketMigrate: (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
    },
    options: { ...ctx.options },
    seed: ctx.seed,
    ceilings: moves.ceilings,
    executes: moves.executes,
    plan: planned?.plan,
    claims: planned?.claims,
    rss: measured.rss,
    durationSeconds: ctx.budget.elapsed(),
    minioIdleCores: ctx.cpu.minioIdleCores,
    skipped: ctx.budget.skipped,
    profile: moves.profile,
  };
  report.scale = { figures, rclone: moves.rclone, ctasSeconds: planned?.ctasSeconds, listing: measured.listing, defaults: moves.defaults };
  return report;
}

/**
 * Writes the results (JSON), prints the table and updates the README. The
 * optional, slow measurements (--rss, --profile) are kept in their own files,
 * so a later run without them still shows the last ones, with their date.
 */
export function publish(report: BenchReport, options: BenchOptions, writeJson: boolean, log: (line: string) => void): void {
  const outDir = path.resolve(ROOT, options.out);
  fs.mkdirSync(outDir, { recursive: true });
  const rssFile = path.join(outDir, 'rss-latest.json');
  const profileFile = path.join(outDir, 'profile-latest.json');
  if (writeJson) {
    if (report.rss) fs.writeFileSync(rssFile, `${JSON.stringify({ ...report.rss, date: report.date }, null, 2)}\n`);
    if (report.profile) fs.writeFileSync(profileFile, `${JSON.stringify({ ...report.profile, date: report.date }, null, 2)}\n`);
    const stamp = report.date.replace(/[:.]/g, '-');
    fs.writeFileSync(path.join(outDir, `bench-${stamp}.json`), `${JSON.stringify(report, null, 2)}\n`);
    fs.writeFileSync(path.join(outDir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
    log(`results: ${path.relative(ROOT, path.join(outDir, 'latest.json'))}`);
  }
  const shown: BenchReport = { ...report };
  if (!shown.rss && fs.existsSync(rssFile)) shown.rss = JSON.parse(fs.readFileSync(rssFile, 'utf8')) as RssResult;
  if (!shown.profile && fs.existsSync(profileFile)) shown.profile = JSON.parse(fs.readFileSync(profileFile, 'utf8')) as ProfileSummary;
  process.stdout.write(`${formatTable(shown)}\n`);
  const section = readmeSection(shown);
  const readme = path.join(ROOT, 'README.md');
  if (options.readme && fs.existsSync(readme) && replaceReadmeSection(readme, section)) {
    log('README.md: performance section updated between <!-- bench:start --> and <!-- bench:end -->');
  } else if (options.readme) {
    log('README.md has no <!-- bench:start --> / <!-- bench:end --> markers: the section follows, to be placed by hand');
    process.stdout.write(`\n<!-- bench:start -->\n${section}\n<!-- bench:end -->\n`);
  }
}

/** Prints the figures table (after the main table). */
export function printScaleFigures(figures: ScaleFigure[]): void {
  process.stdout.write(`\n${formatScaleFigures(figures)}\n`);
}

function packageVersion(name: string): string | undefined {
  try {
    const file = path.join(ROOT, 'node_modules', ...name.split('/'), 'package.json');
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

async function minioVersion(s3: LocalS3): Promise<string> {
  if (s3.kind !== 'minio') return `external S3 at ${s3.endpoint}`;
  const pinned = MINIO_MODULE.split('@')[1] ?? MINIO_MODULE;
  try {
    const binary = await ensureMinioBinary();
    const text = await new Promise<string>((resolve) => {
      const child = spawn(binary, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let output = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      child.once('error', () => resolve(''));
      child.once('close', () => resolve(output));
    });
    const runtime = /Runtime: (\S+)/.exec(text)?.[1];
    return `MinIO ${pinned}${runtime ? ` (${runtime})` : ''}`;
  } catch {
    return `MinIO ${pinned}`;
  }
}
