/** `--log-format json`: every stderr line is one JSON object carrying the run id. */
import t, * as Tap from 'tap';
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

/** Every line of stderr parses as a JSON object with a level and a message. */
function assertOnlyJson(t: Tap.Test, stderr: string, what: string): Array<Record<string, unknown>> {
  const lines = stderr.split('\n').filter((l) => l !== '');
  const parsed: Array<Record<string, unknown>> = [];
  for (const line of lines) {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      t.fail(`${what}: a stderr line that is not JSON: ${line}`);
      continue;
    }
    t.match(value, { level: String, msg: String, time: String }, `${what}: a JSON log line`);
    parsed.push(value as Record<string, unknown>);
  }
  return parsed;
}

t.test('every command accepts --log-format json, and then stderr carries only JSON lines', async (t) => {
  const env = await setupTestEnv(t);
  const json = ['--log-format', 'json'];
  const runs: Array<[string, string[], number]> = [
    ['migrate', ['migrate'], 0],
    ['seed', ['seed', '--count', '12'], 0],
    ['plan', ['plan'], 0],
    ['plan --list', ['plan', '--list', '--json'], 0],
    ['execute --dry-run', ['execute', '--dry-run', '3'], 0],
    ['execute --keep-source', ['execute', '--keep-source', '--progress-interval', '1'], 0],
    ['report', ['report'], 0],
    ['report --json', ['report', '--json'], 0],
    ['execute --delete-only', ['execute', '--delete-only'], 0],
    ['validate', ['validate'], 0],
    ['revert', ['revert', '--limit', '2'], 0],
    ['a bad flag value', ['execute', '--threads', '0'], 2],
    ['an unknown flag', ['report', '--no-such-flag'], 2],
    ['a refused setting', ['plan', '--source-bucket', 'nope-bucket'], 2],
  ];
  for (const [what, args, code] of runs) {
    const result = await runCli([...args, ...json], { env: env.env, timeoutMs: 120_000 });
    t.equal(result.code, code, `${what}: exit ${code}\n${result.stderr}`);
    const lines = assertOnlyJson(t, result.stderr, what);
    if (code !== 0) t.ok(lines.some((l) => l.level === 'error'), `${what}: the error is a JSON line at level error`);
  }
});
