/**
 * The plan phase: `plan` alone on a --plan-rows table (twice, the better
 * kept), the database's own time for the same rows (CREATE TABLE AS SELECT
 * plus its two index builds), a re-plan with nothing new, the ledger's size,
 * and then the claim benchmark on that ledger.
 */
import { query, type BenchContext } from './bench-context.js';
import { mustSucceed } from './children.js';
import { measureClaims, type ClaimResult } from './claims.js';
import type { PlanRun } from './report.js';
import { ctasBaseline } from './scale.js';

/** What the plan phase measured. */
export interface PlanPhaseResult {
  plan: PlanRun;
  ctasSeconds?: number;
  claims?: ClaimResult;
}

export async function runPlanPhase(ctx: BenchContext): Promise<PlanPhaseResult> {
  const { options, dbUrl, log } = ctx;
  log(`plan benchmark: filling a ${options.planRows}-row table`);
  await query(dbUrl, `create table bench_plan_avatars (id serial primary key, path varchar)`);
  try {
    await query(dbUrl, `insert into bench_plan_avatars (path) select 'image/avatar-' || g || '.png' from generate_series(1, $1::int) g`, [options.planRows]);
    await query(dbUrl, `vacuum analyze bench_plan_avatars`);
    const planEnv = {
      ...ctx.base,
      MIGRATE_TABLE: 'bench_plan_avatars',
      LEDGER_SCHEMA: 'bench_plan',
      SOURCE_BUCKET: ctx.buckets[0]!,
      TARGET_BUCKET: ctx.buckets[1]!,
      SOURCE_PREFIX: 'image/',
      TARGET_PREFIX: 'avatar/',
    };
    const attempts: number[] = [];
    const backendCpu: number[] = [];
    for (let i = 0; i < 2 && !ctx.interrupted() && (i === 0 || ctx.budget.allows('the second plan run', attempts[0]! + 45)); i++) {
      await query(dbUrl, `drop schema if exists bench_plan cascade`);
      ctx.cpu.sampler?.start();
      const result = await ctx.children.runCli(['plan'], planEnv);
      const cpu = ctx.cpu.sampler?.stop();
      mustSucceed('plan', result);
      attempts.push(result.seconds);
      if (cpu !== undefined) backendCpu.push(cpu);
      log(`plan of ${options.planRows} rows: ${result.seconds.toFixed(2)} s (${(options.planRows / result.seconds).toFixed(0)} rows/s)`);
    }
    // The database's own time for the same rows, twice, the better kept.
    let ctasSeconds: number | undefined;
    if (!ctx.interrupted()) {
      ctasSeconds = Math.min(await ctasBaseline(dbUrl, 'bench_plan_avatars'), await ctasBaseline(dbUrl, 'bench_plan_avatars'));
      log(`CREATE TABLE AS SELECT + 2 index builds of ${options.planRows} rows: ${ctasSeconds.toFixed(2)} s`);
    }
    const replan = ctx.budget.allows('the re-plan run', attempts[0]! / 2 + 45) ? await ctx.children.runCli(['plan'], planEnv) : undefined;
    if (replan) mustSucceed('plan (again)', replan);
    const best = Math.min(...attempts);
    const ledgerSize = await query<{ heap: number; indexes: number; total: number }>(
      dbUrl,
      `select pg_relation_size('bench_plan.migration_ledger')::float8 as heap,
              pg_indexes_size('bench_plan.migration_ledger')::float8 as indexes,
              pg_total_relation_size('bench_plan.migration_ledger')::float8 as total`,
    );
    const plan: PlanRun = {
      rows: options.planRows,
      attempts,
      seconds: best,
      rowsPerSecond: options.planRows / best,
      backendCpuSeconds: backendCpu.length ? Math.min(...backendCpu) : undefined,
      replanSeconds: replan?.seconds,
      ledgerBytes: ledgerSize[0],
    };
    if (replan) log(`re-plan with nothing new: ${replan.seconds.toFixed(2)} s`);

    let claims: ClaimResult | undefined;
    if (!ctx.interrupted() && ctx.budget.allows('the claim benchmark', 25)) {
      log(`claim benchmark: ${options.claimLanes} lanes, batches of 500`);
      claims = await measureClaims({ url: dbUrl, schema: 'bench_plan', table: 'bench_plan_avatars', lanes: options.claimLanes, batchSize: 500, seconds: 5 });
      log(`claims: ${claims.claimOnly.rowsPerSecond.toFixed(0)} rows/s; full ledger cycle: ${claims.fullCycle.rowsPerSecond.toFixed(0)} keys/s`);
    }
    return { plan, ctasSeconds, claims };
  } finally {
    await query(dbUrl, `drop schema if exists bench_plan cascade`);
    await query(dbUrl, `drop table bench_plan_avatars`);
  }
}
