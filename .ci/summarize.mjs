// Prints the closing "N passed, N failed" line, counting assertions over every
// log given (one per test run), from the summary tap prints at the end of a
// run (# { total, pass, fail, ... }). A log without a summary (the run never
// got that far) counts as one failure.
import { readFileSync } from 'node:fs';

const files = process.argv.length > 2 ? process.argv.slice(2) : ['.ci/test-output.log'];
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of files) {
  let log = '';
  try {
    log = readFileSync(file, 'utf8');
  } catch {
    // No log at all: the test command never ran.
  }
  const summaries = [...log.matchAll(/^# (\{ total: .* \})$/gm)];
  const last = summaries.at(-1)?.[1];
  if (!last) {
    console.error(`${file}: no tap summary; counted as 1 failed`);
    failed += 1;
    continue;
  }
  const field = (name) => Number(new RegExp(`${name}: (\\d+)`).exec(last)?.[1] ?? 0);
  passed += field('pass');
  failed += field('fail');
  skipped += field('skip');
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
