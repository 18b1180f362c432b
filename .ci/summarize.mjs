// Prints "N passed, N failed" from the TAP results tap saved per test file.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Parser } from 'tap-parser';

const root = '.tap/test-results';
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith('.tap')) files.push(path);
  }
};
try {
  walk(root);
} catch {
  // No results at all: the test command failed before running anything.
}
let passed = 0;
let failed = 0;
for (const file of files) {
  const parser = new Parser({ flat: true });
  parser.on('assert', (result) => {
    if (result.skip || result.todo) return;
    if (result.ok) passed++;
    else failed++;
  });
  parser.end(readFileSync(file, 'utf8'));
}
if (files.length === 0) failed++;
console.log(`${passed} passed, ${failed} failed`);
