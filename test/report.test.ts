/**
 * `report` reads the ledger at any time: before a run, during one, after a
 * SIGKILL, and after the resumed run. The fixture has one key in each
 * listed terminal state: a refused key (failed), a destination that already
 * holds another object (conflict), a row without an object (missing) and a
 * row the application changed after the plan (superseded).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { runCli, spawnCli, type CliResult } from './helpers/cli.js';
import { putObject, setupTestEnv, type TestEnv } from './helpers/services.js';
import { query } from './helpers/db.js';
import type { Report as ReportJson } from '../src/report/report-types.js';

/** The documented top-level fields of `report --json` (docs/AUDIT.md). */
const TOP_LEVEL = [
  'attempts',
  'errors',
  'exceptions',
  'generatedAt',
  'lastActivityAt',
  'leases',
  'ledgerConfig',
  'ledgerSchema',
  'planned',
  'progress',
  'runs',
  'states',
  'throughput',
  'version',
];
const STATES = ['pending', 'copied', 'db_updated', 'deleting', 'reverting', 'done', 'failed', 'conflict', 'missing', 'superseded', 'archived', 'reverted'];

/** `report --json`'s output: the type report builds (src/report/report-types.ts). */
type Report = ReportJson;


async function cli(env: TestEnv, args: string[]): Promise<CliResult> {
  return runCli(args, { env: env.env, timeoutMs: 120_000 });
}

async function reportJson(env: TestEnv): Promise<Report> {
  const run = await cli(env, ['report', '--json']);
  if (run.code !== 0) throw new Error(`report exited ${run.code}: ${run.stderr}`);
  return JSON.parse(run.stdout) as Report;
}

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/** Figures that hold in every report, whatever the moment. */
function consistent(t: Test, report: Report, planned: number): void {
  t.same(Object.keys(report).sort(), TOP_LEVEL, 'the documented top-level fields, no more, no fewer');
  t.equal(report.version, 1);
  t.equal(report.planned, planned, 'planned is the number of keys');
  t.same(Object.keys(report.states), STATES, 'one count per state, every state present');
  t.equal(sum(Object.values(report.states)), planned, 'state counts add up to planned');
  t.equal(report.progress.settled + report.progress.remaining, planned);
  t.equal(report.progress.remaining, report.states.pending! + report.states.copied! + report.states.db_updated! + report.states.deleting! + report.states.reverting!);
  t.equal(sum(report.attempts.map((a) => a.keys)), planned, 'the attempts distribution covers every key');
  t.equal(report.throughput.lastHour.length, 60, 'one entry per minute of the last hour');
  t.equal(sum(report.leases.owners.map((o) => o.keys)), report.leases.held + report.leases.expired, 'lease owners account for every lease');
}

t.test('report before, during, after a SIGKILL of, and after a run', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await cli(env, ['seed', '--count', '200', '--awkward', '--quiet'])).code, 0, 'seed');
  await query(env.databaseUrl, "insert into avatars (path) values ('image/ghost.png'), ($1)", ['image/bad\u0001name.png']);
  await putObject(env.s3client, env.targetBucket, 'avatar/avatar-9.png', 'someone else was here');
  t.equal((await cli(env, ['plan', '--list'])).code, 0, 'plan --list');
  // After the plan, the application moves one row elsewhere: its key will be superseded.
  await query(env.databaseUrl, "update avatars set path = 'elsewhere/avatar-10.png' where path = 'image/avatar-10.png'");
  const planned = 214;

  await t.test('before any execute', async (t) => {
    const report = await reportJson(env);
    consistent(t, report, planned);
    t.equal(report.states.pending, 212);
    t.equal(report.states.missing, 1, 'plan --list found no object for the ghost row');
    t.equal(report.states.failed, 1, 'plan refused the key with a control character');
    t.match(report.exceptions.failed!.keys, [{ srcKey: 'image/bad\u0001name.png', failedState: 'pending', error: /control characters/ }]);
    t.match(report.throughput, { since: null, settled: 0, etaSeconds: null });
    t.match(report.runs, [{ command: 'plan --list', status: 'succeeded', exitCode: 0 }]);
    t.equal(report.runs.length, 1);
    t.match(report.ledgerConfig, { source: `s3://${env.sourceBucket}/image/`, target: `s3://${env.targetBucket}/avatar/`, table: 'avatars' });

    const text = await cli(env, ['report']);
    t.equal(text.code, 0);
    t.match(text.stdout, /planned\s+214 keys/);
    t.match(text.stdout, /failed \(1\):\n\s+#\d+ image\/bad.name\.png -> avatar\/bad.name\.png .*error: key contains control characters/);
  });

  // Slow and in small batches, so that the run can be watched and killed halfway.
  const slow = ['execute', '--threads', '1', '--batch-size', '10', '--pipeline', '1', '--max-rps', '10', '--lease-seconds', '5', '--quiet'];
  const execute = spawnCli(slow, { env: env.env, timeoutMs: 180_000 });

  await t.test('during a run', async (t) => {
    let report: Report | undefined;
    for (let i = 0; i < 60; i++) {
      report = await reportJson(env);
      if (report.states.done! >= 10) break;
      await sleep(500);
    }
    t.ok(report && report.states.done! >= 10 && report.progress.remaining > 0, 'caught the run halfway', { states: report?.states });
    consistent(t, report!, planned);
    const run = report!.runs.at(-1)!;
    t.match(run, { command: 'execute', status: 'running', finishedAt: null, exitCode: null, processAlive: true });
    t.match(run.config, { threads: 1, batchSize: 10, maxRps: 10 }, 'the run records its settings');
    t.ok(report!.throughput.since, 'throughput counts from the start of the first execute');
    t.ok(report!.throughput.settled > 0);
    t.ok(report!.throughput.currentPerSecond > 0, 'keys are moving');
    t.ok(report!.throughput.etaSeconds !== null && report!.throughput.etaSeconds > 0, 'an ETA at the current rate');
    t.ok(sum(report!.throughput.lastHour.map((m) => m.settled)) >= report!.states.done!, 'the last hour shows the settled keys');
    t.ok(report!.lastActivityAt);

    const watch = spawnCli(['report', '--watch', '--json', '--interval', '1'], { env: env.env, timeoutMs: 60_000 });
    let seen = '';
    watch.child.stdout!.on('data', (chunk: string) => (seen += chunk));
    for (let i = 0; i < 150 && seen.split('\n').filter(Boolean).length < 2; i++) await sleep(200);
    watch.child.kill('SIGINT');
    const watched = await watch.result;
    t.equal(watched.code, 0, '--watch ends cleanly on SIGINT');
    const docs = watched.stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Report);
    t.ok(docs.length >= 2, `--watch --json printed one document per refresh (${docs.length})`);
    for (const doc of docs) t.equal(doc.planned, planned);
  });

  await t.test('after a SIGKILL', async (t) => {
    execute.child.kill('SIGKILL');
    const killed = await execute.result;
    t.equal(killed.signal, 'SIGKILL');
    const report = await reportJson(env);
    consistent(t, report, planned);
    t.ok(report.progress.remaining > 0, 'keys are left');
    t.match(report.runs.at(-1), { command: 'execute', status: 'running', finishedAt: null, processAlive: false });
    const text = await cli(env, ['report']);
    t.match(text.stdout, /execute\s+running \(process gone: killed or crashed\)/);
  });

  await t.test('after the resumed run', async (t) => {
    const resumed = await cli(env, ['execute', '--threads', '2', '--quiet']);
    t.equal(resumed.code, 1, 'exit 1: a key failed and one is in conflict');
    const report = await reportJson(env);
    consistent(t, report, planned);
    t.same(report.states, { pending: 0, copied: 0, db_updated: 0, deleting: 0, reverting: 0, done: 210, failed: 1, conflict: 1, missing: 1, superseded: 1, archived: 0, reverted: 0 });
    t.same(report.progress, { settled: planned, remaining: 0, percentSettled: 100, percentDone: Number(((210 / planned) * 100).toFixed(2)) });
    t.equal(report.throughput.etaSeconds, 0, 'nothing left');
    t.equal(report.throughput.settled, 212, 'settled by execute: all but the two keys plan settled');
    t.ok(report.throughput.overallPerSecond > 0);
    t.equal(sum(report.throughput.lastHour.map((m) => m.done)), 210, 'every done key in the last hour');
    t.same([report.leases.held, report.leases.expired], [0, 0], 'no lease left');
    t.same(report.attempts[0], { attempts: 0, keys: 2 }, 'the two keys plan settled were never claimed');
    t.ok(report.attempts.slice(1).every((a) => a.attempts >= 1), 'every other key was claimed');

    t.match(report.exceptions.conflict!.keys, [{ srcKey: 'image/avatar-9.png', dstKey: 'avatar/avatar-9.png', error: /destination exists with different content/ }]);
    t.match(report.exceptions.missing!.keys, [{ srcKey: 'image/ghost.png', error: 'not found in the source listing' }]);
    t.match(report.exceptions.superseded!.keys, [{ srcKey: 'image/avatar-10.png' }]);
    t.equal(report.exceptions.failed!.count, 1);
    const errorStates = Object.assign({}, ...report.errors.map((e) => e.states)) as Record<string, number>;
    t.match(errorStates, { failed: 1, conflict: 1, missing: 1 }, 'the top errors cover every failing state');
    t.ok(report.errors.some((e) => e.error.includes('"…"')), 'ETags are blanked so one cause groups as one error');

    t.same(
      report.runs.map((r) => [r.command, r.status]),
      [['plan --list', 'succeeded'], ['execute', 'lost'], ['execute', 'failed']],
      'every run, the killed one included (marked lost by the resumed run, which released its leases)',
    );
    const text = await cli(env, ['report']);
    t.match(text.stdout, /settled\s+214 \(100\.0%\)/);
    t.match(text.stdout, /conflict \(1\):\n\s+#\d+ image\/avatar-9\.png -> avatar\/avatar-9\.png/);
    t.match(text.stdout, /top errors/);
  });
});

t.test('report without a ledger exits 2', async (t) => {
  const env = await setupTestEnv(t, { buckets: false });
  const run = await cli(env, ['report']);
  t.equal(run.code, 2);
  t.match(run.stderr, /there is no ledger in schema bucket_migrate/);
});
