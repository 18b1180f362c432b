/**
 * Runs the bucket-migrate CLI in this process and, when it exits, writes the
 * process's resource usage (peak RSS, CPU time; worker threads included,
 * since getrusage covers the whole process) as JSON to the file named by
 * BENCH_USAGE_FILE. `/usr/bin/time -v` reports the same peak RSS; this works
 * where that binary is missing.
 *
 *   BENCH_USAGE_FILE=/tmp/u.json node dist/scripts/bench/measure.js execute --threads 2
 */
import fs from 'node:fs';

const file = process.env.BENCH_USAGE_FILE;
const started = performance.now();
if (file) {
  process.on('exit', (code) => {
    const usage = process.resourceUsage();
    fs.writeFileSync(
      file,
      JSON.stringify({
        code,
        seconds: (performance.now() - started) / 1000,
        maxRssKiB: usage.maxRSS,
        userCpuSeconds: usage.userCPUTime / 1e6,
        systemCpuSeconds: usage.systemCPUTime / 1e6,
      }),
    );
  });
}
await import('../../src/cli.js');
