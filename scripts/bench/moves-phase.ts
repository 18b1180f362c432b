/**
 * The moves phase, repeated --repeat times: the ceiling, then execute at each
 * --threads, `rclone move` as a peer when installed, the default commands as
 * users run them, the other --dest-check modes and --batch-sizes, and the
 * ceiling again, all back to back on the same objects, so every ratio
 * compares runs that were side by side. With --profile, one more execute
 * under node --cpu-prof.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { countObjects, followObjects, verifyMoved, type BenchContext } from './bench-context.js';
import { runCeiling } from './ceiling-phase.js';
import { bestThreads, runExecute } from './execute-phase.js';
import { summarizeProfiles, type ProfileSummary } from './profile.js';
import type { CeilingRun, ExecuteRun } from './report.js';
import { rcloneInstalled, rcloneMove, sampleRates } from './scale.js';

/** A run of the default commands, with its start-up rates. */
export interface DefaultRun {
  run: ExecuteRun;
  firstTwoSeconds: number | null;
  steady: number | null;
}

/** What the moves phase measured. */
export interface MovesResult {
  ceilings: CeilingRun[][];
  executes: ExecuteRun[];
  rclone: number[];
  defaults: DefaultRun[];
  profile?: ProfileSummary;
}

export async function runMoves(ctx: BenchContext): Promise<MovesResult> {
  const { options } = ctx;
  const moves: MovesResult = { ceilings: [], executes: [], rclone: [], defaults: [] };
  const best = () => bestThreads(moves.executes, options.threads);
  const executeEstimate = () => {
    const full = moves.executes.filter((r) => r.objects === options.count);
    return full.reduce((a, r) => a + r.seconds, 0) / Math.max(full.length, 1) + 15;
  };
  for (let repetition = 1; repetition <= options.repeat && !ctx.interrupted(); repetition++) {
    const these: CeilingRun[] = [await runCeiling(ctx, repetition)];
    for (const threads of options.threads) {
      if (ctx.interrupted()) break;
      moves.executes.push(await runExecute(ctx, { label: `execute --threads ${threads}`, variant: 'threads', threads, repetition }));
    }
    if (!ctx.interrupted() && rcloneInstalled()) {
      const rate = await runRclone(ctx);
      if (rate !== undefined) moves.rclone.push(rate);
    }
    if (!ctx.interrupted()) moves.defaults.push(await runDefaultCommands(ctx, repetition));
    // What each way of checking the destination costs: a HEAD per key
    // (head), one listing per batch (list), or nothing but If-None-Match
    // (conditional; not atomic on MinIO, harmless here since every
    // destination is new).
    for (const mode of options.destChecks) {
      if (ctx.interrupted() || !ctx.budget.allows(`the --dest-check ${mode} run`, executeEstimate())) break;
      const threads = best();
      moves.executes.push(await runExecute(ctx, { label: `execute --threads ${threads} --dest-check ${mode}`, variant: 'dest-check', threads, repetition, extra: ['--dest-check', mode] }));
    }
    for (const batchSize of options.batchSizes) {
      if (ctx.interrupted() || !ctx.budget.allows(`the --batch-size ${batchSize} run`, executeEstimate())) break;
      const threads = best();
      moves.executes.push(
        await runExecute(ctx, { label: `execute --threads ${threads} --batch-size ${batchSize}`, variant: 'batch-size', threads, repetition, extra: ['--batch-size', String(batchSize)] }),
      );
    }
    if (!ctx.interrupted() && ctx.budget.allows('the second ceiling run', these[0]!.seconds + 10)) these.push(await runCeiling(ctx, repetition));
    moves.ceilings.push(these);
  }
  if (options.profile && !ctx.interrupted()) moves.profile = await runProfiled(ctx, best());
  return moves;
}

/** rclone move as a peer (server-side copies between the same buckets); objects/s, or undefined when it refused to start. */
async function runRclone(ctx: BenchContext): Promise<number | undefined> {
  const { here, there } = ctx.shuttle;
  const seconds = await rcloneMove(ctx.s3, here, there).catch(async (err: unknown) => {
    // Refused before moving anything (its configuration): the figure is left out.
    if ((await countObjects(ctx.client, there)) === 0) {
      ctx.log(`rclone move failed before moving anything, left out: ${err instanceof Error ? err.message.split('\n').slice(-2).join(' ') : String(err)}`);
      return undefined;
    }
    throw err;
  });
  if (seconds === undefined) return undefined;
  await verifyMoved(ctx, 'rclone move', here, there);
  await followObjects(ctx, here, there);
  ctx.shuttle.flip();
  ctx.log(`rclone move: ${(ctx.options.count / seconds).toFixed(0)} objects/s`);
  return ctx.options.count / seconds;
}

/** The default commands, as users run them: plan (no --list), then execute --threads 2, sampled for its start-up. */
async function runDefaultCommands(ctx: BenchContext, repetition: number): Promise<DefaultRun> {
  const threads = 2;
  const schema = ctx.nextLedgerSchema();
  const sampled = await sampleRates(ctx.dbUrl, schema, ctx.options.count, () =>
    runExecute(ctx, { label: `plan + execute --threads ${threads} (default commands)`, variant: 'threads', threads, repetition, planArgs: [], schema }),
  );
  const run = { ...sampled.result, variant: 'default' as ExecuteRun['variant'] };
  ctx.log(
    `default commands: ${run.objectsPerSecond.toFixed(0)} objects/s, ${((run.s3Requests ?? NaN) / ctx.options.count).toFixed(3)} requests/key, ` +
      `first 2 s ${sampled.firstTwoSeconds?.toFixed(0)}/s vs steady ${sampled.steady?.toFixed(0)}/s`,
  );
  return { run, firstTwoSeconds: sampled.firstTwoSeconds, steady: sampled.steady };
}

/** Where execute's CPU goes: one run under node --cpu-prof. */
async function runProfiled(ctx: BenchContext, threads: number): Promise<ProfileSummary> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bm-bench-prof-'));
  try {
    await runExecute(ctx, { label: `execute --threads ${threads} (profiled)`, variant: 'profile', threads, repetition: 0, nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir] });
    const profile = summarizeProfiles(dir);
    ctx.log(`profile: ${profile.groups.slice(0, 4).map((g) => `${g.group} ${(100 * g.share).toFixed(0)}%`).join(', ')}`);
    return profile;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
