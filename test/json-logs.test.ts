/** `--log-format json`: every stderr line is one JSON object carrying the run id. */
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { query } from './helpers/db.js';
import { setupTestEnv } from './helpers/services.js';

function parseLines(stderr: string): Array<Record<string, unknown>> {
  return stderr
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

t.test('execute and revert --log-format json', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '10', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);

  const run = await runCli(['execute', '--log-format', 'json', '--progress-interval', '1'], { env: env.env });
  t.equal(run.code, 0, run.stderr);
  const lines = parseLines(run.stderr);
  t.ok(lines.length >= 2, 'several lines');
  const runs = await query<{ id: string }>(env.databaseUrl, `select id::text from bucket_migrate.runs where command = 'execute' order by id desc limit 1`);
  const summary = lines.find((l) => typeof l.msg === 'string' && /^execute: 10 keys moved/.test(l.msg));
  t.ok(summary, 'the summary is a JSON line');
  t.match(summary, { level: 'info', command: 'execute', process_id: String, run_id: Number(runs[0]?.id), time: String });
  for (const line of lines) t.match(line, { level: String, msg: String, process_id: String }, 'every line is JSON');

  const back = await runCli(['revert', '--log-format', 'json', '--limit', '3'], { env: env.env });
  t.equal(back.code, 0, back.stderr);
  const revertLines = parseLines(back.stderr);
  t.ok(revertLines.some((l) => l.command === 'revert' && typeof l.run_id === 'number' && /revert: 3 keys reverted/.test(String(l.msg))));

  const bad = await runCli(['execute', '--log-format', 'xml'], { env: env.env });
  t.equal(bad.code, 2);
});
