/**
 * The Node versions the tool supports (20, 22, 24): the run is on the Node it
 * was asked to be on (CI runs the core tests again on Node 22 with
 * `BM_EXPECT_NODE_MAJOR=22`), and the AWS SDK's eight-line warning about
 * Node < 22 is replaced by at most one line of the tool's own, shown only to
 * a person at a terminal.
 */
import { spawn } from 'node:child_process';
import t from 'tap';
import { CLI_PATH, runCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';

const NODE_MAJOR = Number(process.versions.node.split('.')[0]);
const NOTE = /^note: Node \d+\.\d+\.\d+ is out of support; the AWS SDK needs Node >= 22 from January 2027$/;

t.test('the tests run on the Node the run asked for', async (t) => {
  const expected = process.env.BM_EXPECT_NODE_MAJOR;
  if (expected) t.equal(NODE_MAJOR, Number(expected), `BM_EXPECT_NODE_MAJOR=${expected}, running ${process.version}`);
  t.ok(NODE_MAJOR >= 20, `Node ${process.version} is one the tool supports (>= 20)`);
  const child = await runCli(['--version'], { env: { PATH: process.env.PATH } });
  t.equal(child.code, 0, 'the CLI starts');
  t.comment(`node ${process.version} at ${process.execPath}`);
});

/** Runs the CLI with stdin, stdout and stderr on a pseudo-terminal (util-linux `script`), returning what it printed. */
function runOnTerminal(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const command = [process.execPath, CLI_PATH, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { env: { ...env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output: output.replace(/\r/g, '') }));
  });
}

t.test('the SDK\'s Node warning is at most one line of ours, on a terminal only', async (t) => {
  const env = await setupTestEnv(t);
  // seed builds S3 clients (the SDK warns when the first is made) and writes objects.
  const terminal = await runOnTerminal(['seed', '--count', '3'], env.env);
  t.equal(terminal.code, 0, terminal.output);
  const lines = terminal.output.split('\n');
  t.notMatch(terminal.output, /NodeVersionSupportWarning|AWS SDK for JavaScript|a\.co\//, 'the SDK\'s own warning is never printed');
  const notes = lines.filter((l) => NOTE.test(l));
  t.equal(notes.length, NODE_MAJOR < 22 ? 1 : 0, `Node ${process.version}: ${NODE_MAJOR < 22 ? 'one line' : 'no line'} about it on a terminal`);

  const piped = await runCli(['seed', '--count', '3'], { env: env.env });
  t.equal(piped.code, 0, piped.stderr);
  t.notMatch(piped.stderr, /NodeVersionSupportWarning|AWS SDK for JavaScript|note: Node/, 'nothing about Node in logs and pipes');
});
