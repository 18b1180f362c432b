/**
 * Runs know about each other through the runs table:
 *
 * - `execute` and `revert` exclude each other on one ledger: a live run of
 *   the other command refuses the new one (exit 2, one line naming it); a
 *   run whose process is gone from this host, or whose heartbeat is stale,
 *   does not; several executes at once stay allowed.
 * - The leases of a process killed with SIGKILL are released by a surviving
 *   process and by a restarted one (claimable 10 s later, the grace for a
 *   request it had sent), instead of being waited out (`--lease-seconds 600`
 *   here: waiting it out would time the test out).
 * - A process with nothing to claim because another live run holds the
 *   leases says so on its progress line, naming the run.
 */
import { spawn } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { runCli, spawnCli, type SpawnedCli } from './helpers/cli.js';
import { ledgerStates, query } from './helpers/db.js';
import { setupTestEnv, type TestEnv } from './helpers/services.js';

const SLOW = ['--max-rps', '4', '--batch-size', '5', '--threads', '1', '--pipeline', '1'];

async function until(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Stderr of a spawned CLI, as it arrives. */
function stderrOf(run: SpawnedCli): () => string {
  let text = '';
  run.child.stderr?.on('data', (chunk: Buffer | string) => (text += chunk.toString()));
  return () => text;
}

async function runningRun(env: TestEnv, command: string, pid: number): Promise<{ id: number } | undefined> {
  return (await query<{ id: number }>(env.databaseUrl, `select id::int from bucket_migrate.runs where command = $1 and pid = $2 and status = 'running'`, [command, pid]))[0];
}

async function leasesOf(env: TestEnv, pid: number): Promise<number> {
  const rows = await query<{ n: number }>(
    env.databaseUrl,
    `select count(*)::int as n from bucket_migrate.migration_ledger where locked_by like $1 and locked_until > now()`,
    [`${os.hostname()}:${pid}:%`],
  );
  return rows[0]!.n;
}

/** A pid that no process has any more: a child that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

t.test('execute and revert exclude each other; gone or stale runs do not count; executes run together', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '60', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);

  const first = spawnCli(['execute', '--quiet', ...SLOW], { env: env.env, timeoutMs: 180_000 });
  await until('the execute run row', async () => (await runningRun(env, 'execute', first.child.pid!)) !== undefined);
  const run = (await runningRun(env, 'execute', first.child.pid!))!;

  const refused = await runCli(['revert', '--quiet'], { env: env.env });
  t.equal(refused.code, 2, 'revert refused while execute runs');
  t.match(refused.stderr, new RegExp(`revert refused: execute run ${run.id} \\(host ${os.hostname()}, pid ${first.child.pid}, started \\d{4}-\\d\\d-\\d\\dT[^)]+\\) is still running`));
  t.equal(refused.stderr.trim().split('\n').length, 1, `one line: ${refused.stderr}`);
  t.notMatch(refused.stderr, /\n\s+at /, 'no stack trace');
  const reverts = await query(env.databaseUrl, `select 1 from bucket_migrate.runs where command = 'revert'`);
  t.same(reverts, [], 'the refused revert recorded no run');

  const second = await runCli(['execute', '--quiet', '--threads', '1'], { env: env.env, timeoutMs: 180_000 });
  t.equal(second.code, 0, `a second execute runs alongside the first: ${second.stderr}`);
  const firstDone = await first.result;
  t.equal(firstDone.code, 0, firstDone.stderr);
  t.same(await ledgerStates(env.databaseUrl), { done: 60 });

  // Runs of execute that do not count: another host's with a stale heartbeat, one whose process is gone here.
  let ns: string | null = null;
  try {
    ns = readlinkSync('/proc/self/ns/pid');
  } catch {
    ns = null;
  }
  await query(
    env.databaseUrl,
    `insert into bucket_migrate.runs (command, host, pid, status, heartbeat_at) values ('execute', 'elsewhere', 4242, 'running', now() - interval '5 minutes')`,
  );
  await query(
    env.databaseUrl,
    `insert into bucket_migrate.runs (command, host, pid, pid_namespace, status, heartbeat_at) values ('execute', $1, $2, $3, 'running', now() + interval '1 hour')`,
    [os.hostname(), await deadPid(), ns],
  );
  // One that does: another host's, beating.
  const [live] = await query<{ id: number }>(
    env.databaseUrl,
    `insert into bucket_migrate.runs (command, host, pid, status, heartbeat_at) values ('execute', 'elsewhere', 4343, 'running', now()) returning id::int`,
  );
  const blocked = await runCli(['revert', '--quiet'], { env: env.env });
  t.equal(blocked.code, 2, 'a live execute on another host blocks revert');
  t.match(blocked.stderr, new RegExp(`execute run ${live!.id} \\(host elsewhere, pid 4343, `));
  await query(env.databaseUrl, `update bucket_migrate.runs set heartbeat_at = now() - interval '61 seconds' where id = $1`, [live!.id]);
  const reverted = await runCli(['revert', '--quiet'], { env: env.env, timeoutMs: 120_000 });
  t.equal(reverted.code, 0, `stale and gone runs do not block revert: ${reverted.stderr}`);
  t.same(await ledgerStates(env.databaseUrl), { reverted: 60 });

  // And the other way round: a running revert refuses execute.
  await query(env.databaseUrl, `insert into bucket_migrate.runs (command, host, pid, status, heartbeat_at) values ('revert', 'elsewhere', 77, 'running', now())`);
  const exec = await runCli(['execute', '--quiet'], { env: env.env });
  t.equal(exec.code, 2);
  t.match(exec.stderr, /^bucket-migrate: execute refused: revert run \d+ \(host elsewhere, pid 77, started [^)]+\) is still running on this ledger/m);
});

t.test('the leases of a SIGKILLed execute are released at once, by a survivor and by a restart', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '80', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const args = ['execute', '--lease-seconds', '600', ...SLOW];

  // A survivor: B runs beside A; A is killed holding leases; B finishes them.
  const a = spawnCli(args, { env: env.env, timeoutMs: 180_000 });
  const b = spawnCli([...args, '--progress-interval', '1'], { env: env.env, timeoutMs: 180_000 });
  const bErr = stderrOf(b);
  await until('A to hold leases', async () => (await leasesOf(env, a.child.pid!)) > 0);
  a.child.kill('SIGKILL');
  await a.result;
  t.ok((await leasesOf(env, a.child.pid!)) > 0, 'A died holding leases that expire in 600 s');
  const bDone = await b.result;
  t.equal(bDone.code, 0, bErr());
  t.match(bErr(), /ended without a word \(process gone from this host\): [1-9]\d* leases released \(their keys are claimable in 10 s/);
  t.same(await ledgerStates(env.databaseUrl), { done: 80 }, 'B finished every key, A\'s included');
  const [lost] = await query<{ status: string }>(env.databaseUrl, `select status from bucket_migrate.runs where pid = $1`, [a.child.pid]);
  t.equal(lost?.status, 'lost', "A's run is marked lost");
});

t.test('a restarted execute takes a killed one\'s leases at once', async (t) => {
  const env = await setupTestEnv(t);
  t.equal((await runCli(['seed', '--count', '40', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const a = spawnCli(['execute', '--lease-seconds', '600', ...SLOW], { env: env.env, timeoutMs: 180_000 });
  await until('A to hold leases', async () => (await leasesOf(env, a.child.pid!)) > 0);
  a.child.kill('SIGKILL');
  await a.result;
  const held = await leasesOf(env, a.child.pid!);
  t.ok(held > 0, `A died holding ${held} leases`);
  const again = await runCli(['execute', '--quiet', '--lease-seconds', '600'], { env: env.env, timeoutMs: 120_000 });
  t.equal(again.code, 0, again.stderr);
  t.match(again.stderr, new RegExp(`ended without a word \\(process gone from this host\\): ${held} leases released \\(their keys are claimable in 10 s`));
  t.same(await ledgerStates(env.databaseUrl), { done: 40 });
});

t.test('a process waiting on leases of a live run says whose, and until when', async (t) => {
  const env = await setupTestEnv(t);
  // 25 keys: a worker's first claim (FIRST_CLAIM, the slow start) takes them all.
  t.equal((await runCli(['seed', '--count', '25', '--quiet'], { env: env.env })).code, 0);
  t.equal((await runCli(['plan'], { env: env.env })).code, 0);
  const a = spawnCli(['execute', '--quiet', '--lease-seconds', '600', '--batch-size', '25', '--max-rps', '2', '--threads', '1', '--pipeline', '1'], {
    env: env.env,
    timeoutMs: 180_000,
  });
  await until('A to hold every key', async () => (await leasesOf(env, a.child.pid!)) === 25);
  const run = (await runningRun(env, 'execute', a.child.pid!))!;
  process.kill(a.child.pid!, 'SIGSTOP');
  t.teardown(() => {
    try {
      process.kill(a.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const b = spawnCli(['execute', '--progress-interval', '1'], { env: env.env, timeoutMs: 120_000 });
  const bErr = stderrOf(b);
  await until('B to say what it waits for', async () => /waiting: /.test(bErr()), 60_000);
  b.child.kill('SIGTERM');
  await b.result;
  t.match(
    bErr(),
    new RegExp(`progress: .*; waiting: 25 keys leased by run ${run.id} \\(${os.hostname()}, pid ${a.child.pid}\\) until \\d\\d:\\d\\d:\\d\\d UTC`),
  );
  process.kill(a.child.pid!, 'SIGKILL');
  await a.result;
});
