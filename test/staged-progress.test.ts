/**
 * Each stage of a staged run counts its own work: `--keep-source` counts the
 * keys it moved with their sources kept, `--delete-only` the sources it
 * deleted, in the progress lines, the summary and `report` (issue 15, item 3).
 */
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';
import { query } from './support/end-state.js';

function jsonLines(stderr: string): Array<Record<string, unknown>> {
  return stderr.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

t.test('--keep-source then --delete-only: bar, summary and report count each stage', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '40', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan', '--list'], { env: env.env })).code, 0);

  const keep = await runCli(['execute', '--keep-source', '--threads', '1', '--batch-size', '10', '--progress-interval', '1', '--log-format', 'json'], { env: env.env });
  t.equal(keep.code, 0, keep.stderr);
  const keepLines = jsonLines(keep.stderr);
  const keepProgress = keepLines.filter((l) => l.progress === true);
  t.ok(keepProgress.length >= 1, 'progress lines');
  t.match(keepProgress.at(-1), { stage: 'keep-source', done: 40, total: 40 }, 'the bar ends at 40/40: the stage counts the keys it moved');
  for (const p of keepProgress) {
    t.type(p.done, 'number');
    t.type(p.total, 'number');
    t.type(p.rate, 'number');
    t.ok(p.eta_seconds === null || typeof p.eta_seconds === 'number', 'eta_seconds is a number (null before a rate is known)');
  }
  const keepSummary = keepLines.find((l) => l.summary === true);
  t.match(keepSummary, { msg: /^execute: 40 keys moved with their sources kept in /, done: 40, stage: 'keep-source' });

  const del = await runCli(['execute', '--delete-only', '--threads', '1', '--batch-size', '10', '--progress-interval', '1'], { env: env.env });
  t.equal(del.code, 0, del.stderr);
  t.match(del.stderr, /^progress: 40\/40 \(100\.0%\)/m, 'the delete-only bar ends at 40/40');
  t.match(del.stderr, /^execute: 40 sources deleted in /m, 'the summary counts the deletions');

  const runs = await query<{ counts: { keysDone: number; stage: string } }>(env.databaseUrl, `select counts from bucket_migrate.runs where command = 'execute' order by id`);
  t.same(runs.map((r) => [r.counts.stage, r.counts.keysDone]), [['keep-source', 40], ['delete-only', 40]], 'the runs table records each stage\'s keys');
  const report = await runCli(['report'], { env: env.env });
  t.equal(report.code, 0, report.stderr);
  const executeRuns = report.stdout.split('\n').filter((l) => /execute/.test(l) && /succeeded/.test(l));
  t.equal(executeRuns.length, 2, report.stdout);
  for (const line of executeRuns) t.match(line, /, 40 keys/, `report lists the run with its keys: ${line}`);
});
