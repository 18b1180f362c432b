/**
 * The ceiling phase: ceiling.ts as its own process (list, CopyObject at high
 * concurrency, DeleteObjects by 1,000; no database) between the shuttle's two
 * locations, with MinIO's CPU over the run. The rows then follow the
 * objects, as execute would have made them.
 */
import { followObjects, verifyMoved, type BenchContext } from './bench-context.js';
import { mustSucceed } from './children.js';
import type { CeilingRun } from './report.js';

/** One ceiling run; the shuttle flips after it. */
export async function runCeiling(ctx: BenchContext, repetition: number): Promise<CeilingRun> {
  const { here, there } = ctx.shuttle;
  const cpu0 = ctx.cpu.minio();
  const result = await ctx.children.runNode(
    ctx.children.script('scripts', 'bench', 'ceiling.js'),
    [
      '--source-bucket', here.bucket, '--target-bucket', there.bucket,
      '--source-prefix', here.prefix, '--target-prefix', there.prefix,
      '--concurrency', String(ctx.options.ceilingConcurrency),
    ],
    ctx.base,
  );
  mustSucceed('ceiling', result);
  const cpu1 = ctx.cpu.minio();
  const measured = JSON.parse(result.stdout.trim().split('\n').pop()!) as CeilingRun;
  if (measured.errors > 0 || measured.objects !== ctx.options.count) {
    throw new Error(`ceiling: ${measured.errors} errors, ${measured.objects} of ${ctx.options.count} objects`);
  }
  if (cpu0 !== undefined && cpu1 !== undefined) {
    measured.minioCpuSecondsRaw = cpu1 - cpu0;
    measured.minioCpuSeconds = ctx.cpu.busy(cpu1 - cpu0, result.seconds);
  }
  measured.repetition = repetition;
  await verifyMoved(ctx, 'ceiling', here, there);
  await followObjects(ctx, here, there);
  ctx.shuttle.flip();
  ctx.log(`ceiling: ${measured.objectsPerSecond.toFixed(0)} objects/s (copy ${measured.copiesPerSecond.toFixed(0)}/s at concurrency ${measured.concurrency})`);
  return measured;
}
