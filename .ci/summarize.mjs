// Prints the closing "N passed, N failed" line, counting assertions, from
// the summary tap prints at the end of the run (# { total, pass, fail, ... }).
import { readFileSync } from 'node:fs';

let log = '';
try {
  log = readFileSync(process.argv[2] ?? '.ci/test-output.log', 'utf8');
} catch {
  // No log at all: the test command never ran.
}
const summaries = [...log.matchAll(/^# (\{ total: .* \})$/gm)];
const last = summaries.at(-1)?.[1];
if (!last) {
  console.log('0 passed, 1 failed');
} else {
  const field = (name) => Number(new RegExp(`${name}: (\\d+)`).exec(last)?.[1] ?? 0);
  const passed = field('pass');
  const failed = field('fail');
  const skipped = field('skip');
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
}
