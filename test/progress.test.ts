import t from 'tap';
import { spawn } from 'node:child_process';
import { runCli, CLI_PATH } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { setupTestEnv } from './helpers/services.js';

t.test('off a terminal: one plain progress line per --progress-interval', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '600', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const run = await runCli(['execute', '--threads', '1', '--concurrency', '2', '--batch-size', '20', '--pipeline', '1', '--progress-interval', '1'], {
    env: env.env,
    timeoutMs: 120_000,
  });
  t.equal(run.code, 0, run.stderr);
  const lines = run.stderr.split('\n').filter((l) => l.startsWith('progress: '));
  t.ok(lines.length >= 2, `${lines.length} progress lines`);
  for (const line of lines) {
    t.match(line, /^progress: \d+\/600 \(\d+\.\d%\) [\d.]+\/s \(10s\) [\d.]+\/s overall, ETA \S+, failed 0, conflict 0$/);
  }
  t.notMatch(run.stderr, /\r|\x1b\[/, 'no terminal control characters off a TTY');
  const runs = await query<{ counts: { done: number } }>(env.databaseUrl, `select counts from bucket_migrate.runs where command = 'execute'`);
  t.equal(runs[0]?.counts.done, 600, 'the run published its counts');

  const quiet = await runCli(['execute', '--quiet'], { env: env.env });
  t.notMatch(quiet.stderr, /progress:/, '--quiet silences progress');
  t.same(await ledgerStates(env.databaseUrl), { done: 600 });
});

t.test('on a terminal: a live bar redrawn in place', { skip: process.platform !== 'linux' ? 'needs script(1)' : false }, async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '300', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  // script(1) gives the CLI a pseudo-terminal, as an operator's shell would.
  const command = `${process.execPath} ${CLI_PATH} execute --threads 1 --concurrency 2 --batch-size 20 --pipeline 1`;
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { env: env.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`exit ${code}: ${text}`))));
    child.stdin.end();
  });
  t.match(output, /\r\x1b\[2K\[[#.]{30}\] \d+\/300 /, 'a bar redrawn with carriage returns');
  t.match(output, /\[#{30}\] 300\/300 100\.0%/, 'it ends full');
  t.same(await ledgerStates(env.databaseUrl), { done: 300 });
});
