/**
 * The benchmark's results: their shape, the table printed at the end, and
 * the README section generated from them.
 */
import fs from 'node:fs';
import { DEFAULT_DEST_CHECK } from '../../src/copy/copy-config.js';
import type { CeilingResult } from './ceiling.js';
import type { ClaimResult } from './claims.js';
import type { ProfileSummary } from './profile.js';

export interface ExecuteRun {
  label: string;
  /** Which comparison the run belongs to: the --threads sweep (default flags), a --dest-check mode, a --batch-size, the RSS run. */
  variant: 'threads' | 'dest-check' | 'batch-size' | 'rss' | 'profile';
  repetition: number;
  threads: number;
  args: string[];
  planArgs: string[];
  destCheck: string;
  batchSize: number;
  objects: number;
  planSeconds: number;
  executeSeconds: number;
  /** plan + execute, each a whole CLI process (start-up and preflight included). */
  seconds: number;
  objectsPerSecond: number;
  /** execute's own figure: from the first claim to the last key (no start-up). */
  executeInternalSeconds?: number;
  s3Requests?: number;
  retries?: number;
  throttles?: number;
  maxRssKiB?: number;
  clientCpuSeconds?: number;
  /** MinIO's CPU time, less its idle rate over the run's wall time. */
  minioCpuSeconds?: number;
  minioCpuSecondsRaw?: number;
  postgresCpuSeconds?: number;
  /** WAL written by the whole server during execute (other databases included). */
  serverWalBytes?: number;
  ledgerUpdates?: number;
  ledgerHotUpdates?: number;
  tableUpdates?: number;
  tableHotUpdates?: number;
  /** Committed transactions in the benchmark's database during execute (each statement is one). */
  dbTransactions: number;
  batches: number;
}

export interface PlanRun {
  rows: number;
  attempts: number[];
  seconds: number;
  rowsPerSecond: number;
  backendCpuSeconds?: number;
  replanSeconds?: number;
  ledgerBytes?: { heap: number; indexes: number; total: number };
}

export interface RssResult {
  threads: number;
  smallCount: number;
  smallMaxRssKiB: number;
  bigCount: number;
  bigMaxRssKiB: number;
  ratio: number;
  bigRun: ExecuteRun;
  /** When the figures come from an earlier run (bench-results/rss-latest.json). */
  date?: string;
}

export type CeilingRun = CeilingResult & { minioCpuSeconds?: number; minioCpuSecondsRaw?: number; repetition?: number };

export interface BenchReport {
  date: string;
  command: string;
  machine: {
    cores: number;
    cpuModel: string;
    memoryBytes: number;
    platform: string;
    loadAverageAtStart: number[];
    loadAverageAtEnd: number[];
  };
  versions: Record<string, string | undefined>;
  options: Record<string, unknown>;
  seed: { objects: number; seconds: number };
  ceilings: CeilingRun[][];
  executes: ExecuteRun[];
  plan?: PlanRun;
  claims?: ClaimResult;
  rss?: RssResult;
  durationSeconds: number;
  /** MinIO's CPU use while idle, in cores; subtracted from its figures. */
  minioIdleCores?: number;
  /** Optional runs left out to stay within --budget-minutes. */
  skipped?: string[];
  /** Where a profiled execute's CPU went (`--profile`; else the last run that had it, with its date). */
  profile?: ProfileSummary & { date?: string };
}

export const TARGETS = {
  ratio: 0.8,
  planRowsPerSecond: 250_000,
  rssGrowth: 1.25,
} as const;

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);

export function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The ceiling an execute run is compared with: the mean of its repetition's ceilings (before and after it). */
export function ceilingFor(report: BenchReport, repetition: number): number {
  const these = report.ceilings[repetition - 1] ?? report.ceilings.flat();
  return mean(these.map((c) => c.objectsPerSecond));
}

export function ratioOf(report: BenchReport, run: ExecuteRun): number {
  return run.objectsPerSecond / ceilingFor(report, run.repetition || 1);
}

/** CPU milliseconds per object of each process, where known. */
export function cpuPerObject(run: { objects: number; clientCpuSeconds?: number; minioCpuSeconds?: number; postgresCpuSeconds?: number }) {
  const ms = (s: number | undefined) => (s === undefined ? undefined : (s * 1000) / run.objects);
  const client = ms(run.clientCpuSeconds);
  const minio = ms(run.minioCpuSeconds);
  const postgres = ms(run.postgresCpuSeconds);
  const known = [client, minio, postgres].filter((x): x is number => x !== undefined);
  return { client, minio, postgres, total: known.length ? known.reduce((a, b) => a + b, 0) : undefined };
}

function ceilingCpu(c: CeilingRun) {
  return cpuPerObject({ objects: c.objects, clientCpuSeconds: c.cpuSeconds, minioCpuSeconds: c.minioCpuSeconds });
}

/** Results written before runs carried their `variant`. */
function variantOf(run: ExecuteRun): ExecuteRun['variant'] {
  if (run.variant) return run.variant;
  if (run.label.includes('--dest-check')) return 'dest-check';
  if (run.label.includes('--batch-size')) return 'batch-size';
  return run.repetition === 0 ? 'rss' : 'threads';
}

/** The same figures for each configuration, median over repetitions. */
export function summarize(report: BenchReport) {
  const groups = new Map<string, ExecuteRun[]>();
  for (const run of report.executes) {
    if (run.repetition === 0) continue;
    groups.set(run.label, [...(groups.get(run.label) ?? []), run]);
  }
  const ceilingCpuTotal = median(report.ceilings.flat().map((c) => ceilingCpu(c).total ?? NaN).filter(Number.isFinite));
  return [...groups].map(([label, runs]) => {
    const cpu = runs.map(cpuPerObject);
    const pick = (f: (c: ReturnType<typeof cpuPerObject>) => number | undefined) => {
      const xs = cpu.map(f).filter((x): x is number => x !== undefined);
      return xs.length ? median(xs) : undefined;
    };
    const cpuTotal = pick((c) => c.total);
    return {
      label,
      variant: variantOf(runs[0]!),
      threads: runs[0]!.threads,
      destCheck: runs[0]!.destCheck,
      batchSize: runs[0]!.batchSize,
      objectsPerSecond: median(runs.map((r) => r.objectsPerSecond)),
      ratio: median(runs.map((r) => ratioOf(report, r))),
      /** Ceiling CPU per object over this run's: the ratio a machine with nothing else running would show, if CPU-bound. */
      cpuRatio: cpuTotal && Number.isFinite(ceilingCpuTotal) ? ceilingCpuTotal / cpuTotal : undefined,
      maxRssKiB: Math.max(...runs.map((r) => r.maxRssKiB ?? 0)),
      requestsPerObject: median(runs.map((r) => (r.s3Requests ?? NaN) / r.objects)),
      client: pick((c) => c.client),
      minio: pick((c) => c.minio),
      postgres: pick((c) => c.postgres),
      cpuTotal,
      transactionsPerBatch: median(runs.map((r) => r.dbTransactions / r.batches)),
      planSeconds: median(runs.map((r) => r.planSeconds)),
      ledgerHotShare: median(runs.map((r) => (r.ledgerHotUpdates ?? NaN) / (r.ledgerUpdates ?? NaN))),
      ledgerUpdatesPerObject: median(runs.map((r) => (r.ledgerUpdates ?? NaN) / r.objects)),
      tableHotShare: median(runs.map((r) => (r.tableHotUpdates ?? NaN) / (r.tableUpdates ?? NaN))),
      walBytesPerObject: median(runs.map((r) => (r.serverWalBytes ?? NaN) / r.objects)),
      executeSeconds: median(runs.map((r) => r.executeSeconds)),
      runs: runs.length,
      plan: ['plan', ...(runs[0]!.planArgs ?? [])].join(' '),
    };
  });
}

const f0 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : Math.round(x).toLocaleString('en-US'));
const f2 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(2));
const mib = (kib: number | undefined) => (kib ? `${Math.round(kib / 1024)} MiB` : '-');

function machineLine(report: BenchReport): string {
  const m = report.machine;
  const v = report.versions;
  return (
    `${m.cores} cores (${m.cpuModel}), ${(m.memoryBytes / 1024 ** 3).toFixed(1)} GiB RAM, ${m.platform}; ` +
    `Node ${v.node}, PostgreSQL ${v.postgres} (${v.postgresKind}), ${v.s3} (${v.s3Kind}), @aws-sdk/client-s3 ${v.awsSdkClientS3}; ` +
    `all on one machine. Load average ${m.loadAverageAtStart.map((x) => x.toFixed(1)).join(' / ')} at the start, ` +
    `${m.loadAverageAtEnd.map((x) => x.toFixed(1)).join(' / ')} at the end (1/5/15 min).`
  );
}

interface Row {
  run: string;
  rate: string;
  ratio: string;
  cpuRatio: string;
  seconds: string;
  rss: string;
  requests: string;
  client: string;
  minio: string;
  postgres: string;
  xacts: string;
}

function rows(report: BenchReport): Row[] {
  const out: Row[] = [];
  const ceilings = report.ceilings.flat();
  if (ceilings.length) {
    const cpu = ceilings.map(ceilingCpu);
    out.push({
      run: `ceiling (CopyObject at ${ceilings[0]!.concurrency} in flight, ${ceilings.length} runs)`,
      rate: f0(median(ceilings.map((c) => c.objectsPerSecond))),
      ratio: '1.00',
      cpuRatio: '1.00',
      seconds: f2(median(ceilings.map((c) => c.seconds))),
      rss: mib(Math.max(...ceilings.map((c) => c.maxRssKiB))),
      requests: f2(median(ceilings.map((c) => c.requests / c.objects))),
      client: f2(median(cpu.map((c) => c.client ?? NaN))),
      minio: f2(median(cpu.map((c) => c.minio ?? NaN))),
      postgres: '-',
      xacts: '-',
    });
  }
  for (const s of summarize(report)) {
    out.push({
      run: `${s.plan} + ${s.label}${s.runs > 1 ? ` (median of ${s.runs})` : ''}`,
      rate: f0(s.objectsPerSecond),
      ratio: f2(s.ratio),
      cpuRatio: f2(s.cpuRatio),
      seconds: `${f2(s.planSeconds)} + ${f2(s.executeSeconds)}`,
      rss: mib(s.maxRssKiB),
      requests: f2(s.requestsPerObject),
      client: f2(s.client),
      minio: f2(s.minio),
      postgres: f2(s.postgres),
      xacts: f2(s.transactionsPerBatch),
    });
  }
  return out;
}

const HEADERS: Record<keyof Row, string> = {
  run: 'run',
  rate: 'objects/s',
  ratio: 'x ceiling',
  cpuRatio: 'x ceiling (CPU)',
  seconds: 'seconds',
  rss: 'peak RSS',
  requests: 'S3 req/object',
  client: 'client CPU ms/obj',
  minio: 'MinIO CPU ms/obj',
  postgres: 'Postgres CPU ms/obj',
  xacts: 'DB xacts/batch',
};

/** The plain-text table printed at the end of a run. */
export function formatTable(report: BenchReport): string {
  const table = rows(report);
  const keys = Object.keys(HEADERS) as Array<keyof Row>;
  const width = (k: keyof Row) => Math.max(HEADERS[k].length, ...table.map((r) => r[k].length));
  const line = (r: Row | typeof HEADERS) => keys.map((k) => (k === 'run' ? r[k].padEnd(width(k)) : r[k].padStart(width(k)))).join('  ');
  const lines = [
    '',
    `bucket-migrate benchmark, ${report.date}: N = ${report.seed.objects.toLocaleString('en-US')} keys`,
    machineLine(report),
    '',
    line(HEADERS),
    keys.map((k) => '-'.repeat(width(k))).join('  '),
    ...table.map(line),
    '',
    ...extras(report),
  ];
  return lines.join('\n');
}

function extras(report: BenchReport): string[] {
  const lines: string[] = [];
  if (report.plan) {
    const p = report.plan;
    lines.push(
      `plan alone, ${p.rows.toLocaleString('en-US')}-row table: ${p.seconds.toFixed(2)} s, ${f0(p.rowsPerSecond)} rows/s ` +
        `(runs: ${p.attempts.map((s) => s.toFixed(2)).join(', ')} s; Postgres backend CPU ${f2(p.backendCpuSeconds)} s; ` +
        `re-plan with nothing new ${p.replanSeconds !== undefined ? `${p.replanSeconds.toFixed(2)} s` : 'skipped'})`,
    );
    if (p.ledgerBytes) {
      lines.push(
        `ledger on disk at ${p.rows.toLocaleString('en-US')} rows: heap ${f0(p.ledgerBytes.heap / 1024 ** 2)} MiB + indexes ${f0(p.ledgerBytes.indexes / 1024 ** 2)} MiB ` +
          `= ${f0(p.ledgerBytes.total / 1024 ** 2)} MiB (${f0(p.ledgerBytes.total / p.rows)} bytes/key)`,
      );
    }
  }
  if (report.claims) {
    const c = report.claims;
    lines.push(
      `ledger alone, ${c.lanes} connections, batches of ${c.batchSize}: claims ${f0(c.claimOnly.rowsPerSecond)} rows/s; ` +
        `full cycle (claim, copied, commit table+ledger, done) ${f0(c.fullCycle.rowsPerSecond)} keys/s (${f0(c.fullCycle.statementsPerSecond)} statements/s)`,
    );
  }
  const rss = report.rss;
  if (rss) {
    lines.push(
      `peak RSS of execute --threads ${rss.threads}: ${mib(rss.smallMaxRssKiB)} at ${rss.smallCount.toLocaleString('en-US')} keys, ` +
        `${mib(rss.bigMaxRssKiB)} at ${rss.bigCount.toLocaleString('en-US')} keys: x${rss.ratio.toFixed(2)}${rss.date ? ` (measured ${rss.date})` : ''}`,
    );
  }
  const first = summarize(report)[0];
  if (first && Number.isFinite(first.ledgerUpdatesPerObject)) {
    lines.push(
      `ledger: ${first.ledgerUpdatesPerObject.toFixed(1)} updates per key, ${(100 * first.ledgerHotShare).toFixed(0)}% HOT; ` +
        `table: ${(100 * first.tableHotShare).toFixed(0)}% of row updates HOT; ` +
        `WAL written by the whole server during execute: ${f0(first.walBytesPerObject)} bytes per key (${first.label})`,
    );
  }
  if (report.minioIdleCores !== undefined) {
    lines.push(`MinIO uses ${(100 * report.minioIdleCores).toFixed(1)}% of a core when idle (its scanner); that rate times each run's duration is left out of its CPU per object`);
  }
  if (report.skipped?.length) lines.push(`left out to stay within the time budget: ${report.skipped.join(', ')}`);
  lines.push(`benchmark took ${Math.round(report.durationSeconds)} s`);
  return lines;
}

/** What each `--dest-check` mode does, for the sentences below. */
const DEST_CHECK_WORDS: Record<string, string> = {
  list: 'one listing of each batch\'s destination range instead of a HEAD per key; checked at batch start',
  head: 'a HEAD of each destination right before its copy: one more request per key',
  conditional: 'nothing before the copy but If-None-Match, for servers that honour it, not MinIO',
};

/** The runs of the other `--dest-check` modes (one per mode). */
function otherModes<T extends { variant: string; destCheck: string }>(summary: T[], mode: string): T[] {
  return summary.filter((s) => s.variant === 'dest-check' && s.destCheck !== mode);
}

/** Whether each target holds, in words, from the figures. */
export function targetLines(report: BenchReport): string[] {
  const lines: string[] = [];
  const summary = summarize(report);
  const byThreads = summary.filter((s) => s.variant === 'threads');
  const best = [...byThreads].sort((a, b) => b.ratio - a.ratio)[0];
  if (best) {
    const ok = best.ratio >= TARGETS.ratio;
    const mode = best.destCheck ?? DEFAULT_DEST_CHECK;
    lines.push(
      `- **execute >= ${TARGETS.ratio} x ceiling at ${report.seed.objects.toLocaleString('en-US')} keys**: ` +
        `${ok ? 'holds' : '**does not hold**'} with the default flags (\`--dest-check ${mode}\`): best ${best.ratio.toFixed(2)} (\`--threads ${best.threads}\`; ` +
        `${best.cpuRatio !== undefined ? `${best.cpuRatio.toFixed(2)} by CPU cost per object` : 'CPU not measured'}). ` +
        otherModes(summary, mode)
          .map(
            (other) =>
              `With \`--dest-check ${other.destCheck}\` (${DEST_CHECK_WORDS[other.destCheck] ?? 'another check'}): ${other.ratio.toFixed(2)}` +
              `${other.cpuRatio !== undefined ? ` (${other.cpuRatio.toFixed(2)} by CPU)` : ''}` +
              `${other.ratio >= TARGETS.ratio ? ', which meets the target' : ', which does not'}.`,
          )
          .join(' '),
    );
  }
  if (report.plan) {
    const ok = report.plan.rowsPerSecond >= TARGETS.planRowsPerSecond;
    lines.push(
      `- **plan >= ${TARGETS.planRowsPerSecond.toLocaleString('en-US')} rows/s at ${report.plan.rows.toLocaleString('en-US')} rows**: ` +
        `${ok ? 'holds' : '**does not hold**'}: ${f0(report.plan.rowsPerSecond)} rows/s (${report.plan.seconds.toFixed(2)} s for the whole \`plan\` process` +
        `${report.plan.backendCpuSeconds !== undefined ? `; the Postgres backend used ${report.plan.backendCpuSeconds.toFixed(2)} s of CPU, i.e. ${f0(report.plan.rows / report.plan.backendCpuSeconds)} rows per CPU-second` : ''}).`,
    );
  }
  const rss = report.rss;
  if (rss) {
    const ok = rss.ratio <= TARGETS.rssGrowth;
    lines.push(
      `- **peak RSS at ${rss.bigCount.toLocaleString('en-US')} keys <= ${TARGETS.rssGrowth} x at ${rss.smallCount.toLocaleString('en-US')}**: ` +
        `${ok ? 'holds' : '**does not hold**'}: ${mib(rss.bigMaxRssKiB)} vs ${mib(rss.smallMaxRssKiB)} (x${rss.ratio.toFixed(2)}, \`--threads ${rss.threads}\`` +
        `${rss.date ? `; measured by \`npm run bench -- --rss\` on ${rss.date.slice(0, 10)}` : ''}).`,
    );
  } else {
    lines.push(`- **flat memory**: not measured in this run (\`npm run bench -- --rss\` seeds and moves ${(200_000).toLocaleString('en-US')} keys).`);
  }
  const xacts = byThreads.map((s) => s.transactionsPerBatch).filter(Number.isFinite);
  lines.push(
    `- **constant statements per batch**: holds; \`test/performance.test.ts\` counts the statements of whole runs at two batch sizes (one claim, one mark-copied, one table+ledger commit, one mark-done per batch). ` +
      (xacts.length ? `Here, committed transactions during execute over batches: ${xacts.map((x) => x.toFixed(1)).join(', ')} (the per-batch 4 plus a constant ~20 for start-up and summary).` : ''),
  );
  lines.push('- **table update by primary key**: holds; `test/performance.test.ts` checks `EXPLAIN` of the commit on a 1,000,000-row table: an index scan on the primary key, no Seq Scan.');
  return lines;
}

/** What bounds the rate, from the CPU figures. */
export function boundLines(report: BenchReport): string[] {
  const lines: string[] = [];
  const ceilings = report.ceilings.flat();
  const summary = summarize(report);
  const main = summary.filter((s) => s.variant === 'threads').sort((a, b) => b.ratio - a.ratio)[0];
  if (!ceilings.length || !main) return lines;
  const others = otherModes(summary, main.destCheck);
  const c = {
    client: median(ceilings.map((x) => ceilingCpu(x).client ?? NaN)),
    minio: median(ceilings.map((x) => ceilingCpu(x).minio ?? NaN)),
  };
  const cores = report.machine.cores;
  const budget = (total: number | undefined) => (total ? (cores * 1000) / total : undefined);
  lines.push(
    `- CPU per object: the ceiling spends ${f2(c.client)} ms in its client and ${f2(c.minio)} ms in MinIO; ` +
      `execute (\`--threads ${main.threads}\`, \`--dest-check ${main.destCheck}\`) spends ${f2(main.client)} ms in the client, ${f2(main.minio)} ms in MinIO and ${f2(main.postgres)} ms in Postgres backends` +
      others.map((o) => `; with \`--dest-check ${o.destCheck}\`, ${f2(o.client)} + ${f2(o.minio)} + ${f2(o.postgres)} ms`).join('') +
      `. With ${cores} cores shared by all three, that caps the rate at about ${f0(budget(c.client + c.minio))} objects/s for the ceiling and ${f0(budget(main.cpuTotal))} for execute` +
      (others.length ? ` (${others.map((o) => `${f0(budget(o.cpuTotal))} with ${o.destCheck}`).join(', ')})` : '') +
      ', if nothing else ran on the machine.',
  );
  const requestWords: Record<string, string> = {
    list: 'a CopyObject per key, one listing and one DeleteObjects per batch',
    head: 'a HEAD and a CopyObject per key, one DeleteObjects per batch',
    conditional: 'a CopyObject per key, one DeleteObjects per batch',
  };
  lines.push(
    `- S3 requests per object: ${f2(main.requestsPerObject)} for execute with \`--dest-check ${main.destCheck}\` (${requestWords[main.destCheck] ?? 'see docs/SCALE.md'}), ` +
      others.map((o) => `${f2(o.requestsPerObject)} with ${o.destCheck}, `).join('') +
      'about 1.0 for the ceiling. ' +
      'Most client CPU is the AWS SDK building, signing and parsing each request (profile below), so a HEAD costs the client about as much as the copy itself, and MinIO a fifth to a third of a copy: ' +
      'a second request per key (`--dest-check head`) costs most of the gap to the ceiling, which is why the default checks a whole batch with one listing.',
  );
  const threadRuns = summary.filter((s) => s.variant === 'threads').sort((a, b) => a.threads - b.threads);
  if (threadRuns.length > 1) {
    lines.push(
      `- Threads: ${threadRuns.map((s) => `${s.threads} → ${f0(s.objectsPerSecond)}/s, ${f2(s.client)} ms client CPU/obj, ${mib(s.maxRssKiB)}`).join('; ')}. ` +
        'On this machine the client shares 2 cores with MinIO and Postgres (and everything else running), so more threads add CPU per object (more sockets in flight, a V8 heap and SDK per thread) without adding throughput; they pay off when the client has cores of its own, as it does against AWS.',
    );
  }
  if (report.plan) {
    lines.push(
      `- plan: a fresh ledger is loaded with COPY streamed between two Postgres connections: one reads the table (a parallel scan that also judges each key) and sorts the paths, the other writes ${f0(report.plan.rows)} ledger rows frozen, as the sorted rows arrive; then the ledger's three indexes are built and it is analyzed. ` +
        `The backends used ${f2(report.plan.backendCpuSeconds)} s of CPU for ${f0(report.plan.rows / 1e6)}M rows (${f0(report.plan.rows / (report.plan.backendCpuSeconds ?? NaN))} rows per CPU-second); the rest of the wall time is process start-up, waiting for a core, and WAL writes (fsync on). A re-plan with nothing new is one hash join of the table with the ledger${report.plan.replanSeconds !== undefined ? ` (${report.plan.replanSeconds.toFixed(2)} s)` : ''}.`,
    );
  }
  if (report.claims) {
    lines.push(
      `- The ledger alone (no S3) moves ${f0(report.claims.fullCycle.rowsPerSecond)} keys/s through its four statements per batch with ${report.claims.lanes} connections, against ${f0(report.claims.claimOnly.rowsPerSecond)} rows/s of claims alone: ` +
        'the difference is the table + ledger commit, which updates one table row per key by primary key and the ledger row by id, linear in the batch (`test/performance.test.ts` checks that no node of its plan handles more than a small multiple of the batch).',
    );
  }
  const p = report.profile;
  if (p) {
    lines.push(
      `- Profile of \`execute\` (\`npm run bench -- --profile\`, node --cpu-prof, all threads${p.date ? `, ${p.date.slice(0, 10)}` : ''}): ` +
        p.groups
          .filter((g) => g.share >= 0.01)
          .map((g) => `${g.group} ${(100 * g.share).toFixed(0)}%`)
          .join(', ') +
        '.',
    );
  }
  return lines;
}

/** The README's performance section (between the bench markers). */
export function readmeSection(report: BenchReport): string {
  const table = rows(report);
  const keys = Object.keys(HEADERS) as Array<keyof Row>;
  const md = (r: Row | typeof HEADERS) => `| ${keys.map((k) => r[k]).join(' | ')} |`;
  const ceilingRuns = report.ceilings.flat().length;
  const lines = [
    `Generated by \`${report.command}\` on ${report.date.slice(0, 10)} (${Math.round(report.durationSeconds)} s). Do not edit between the markers: the next run replaces it.`,
    '',
    `Machine: ${machineLine(report)} Wall-clock rates vary with whatever else runs on the machine (see the load averages; other engineers' test suites shared this one); ` +
      `ceiling and tool were measured back to back (the ceiling ${ceilingRuns > report.ceilings.length ? 'before and after' : 'right before'} the execute runs), and the CPU time of each process per object, ` +
      'which other load does not change, is shown next to them.',
    '',
    `N = ${report.seed.objects.toLocaleString('en-US')} keys (small PNGs), moved back and forth between two buckets. ` +
      '"objects/s" of bucket-migrate counts the whole `plan` and `execute` processes (start-up, checks, plan) against the ceiling\'s list + copy + delete. ' +
      '"x ceiling (CPU)" is the ceiling\'s CPU time per object over the run\'s: the ratio a CPU-bound machine with nothing else running would show.',
    '',
    md(HEADERS),
    `|${keys.map((k) => (k === 'run' ? '---' : '---:')).join('|')}|`,
    ...table.map(md),
    '',
    ...extras(report).map((l) => `- ${l}`),
    '',
    '### Targets',
    '',
    ...targetLines(report),
    '',
    '### What bounds it',
    '',
    ...boundLines(report),
    '',
    `Figures: \`bench-results/latest.json\` (written by each run, not committed). Reproduce: \`${report.command}\`; \`npm run bench -- --rss\` adds the ${(200_000).toLocaleString('en-US')}-key memory run, \`--repeat 3\` repeats the sequence, \`--help\` lists the rest.`,
  ];
  return lines.join('\n');
}

/** Replaces what is between the markers; false (and nothing written) when the markers are missing. */
export function replaceReadmeSection(file: string, section: string): boolean {
  const text = fs.readFileSync(file, 'utf8');
  const start = text.indexOf('<!-- bench:start -->');
  const end = text.indexOf('<!-- bench:end -->');
  if (start < 0 || end < start) return false;
  const next = `${text.slice(0, start + '<!-- bench:start -->'.length)}\n${section}\n${text.slice(end)}`;
  fs.writeFileSync(file, next);
  return true;
}
