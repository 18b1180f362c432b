/**
 * The adversarial scenario of issue 12: everything that may legitimately
 * happen to a migration, at once, with the invariant observer watching.
 * Shared by test/adversarial.test.ts (one cycle) and scripts/soak.ts (many).
 *
 * On a fresh database and buckets (the seed's table: `avatars(id serial
 * primary key, path varchar)`, no index on the path column), after a few
 * rows in other spellings of a key (`/image/x`, `s3://<bucket>/image/x`) and
 * one `plan`, these run concurrently for `chaosSeconds`, and longer (at
 * most 3x) until 60% of the keys have moved, so a slow machine gets as much
 * real work under chaos as a fast one:
 * - two execute loops: `execute` runs one after another, each with random
 *   flags (threads, batch size, concurrency, full / `--keep-source` /
 *   `--delete-only`), all with a short `--lease-seconds`;
 * - a revert loop: `revert --limit N` now and then; exit 2 (refused while an
 *   execute runs) is a legitimate answer, and after two refusals in a row
 *   the execute loops hold off new runs until no execute of ours is running
 *   and that revert has run;
 * - a plan loop: `plan` (sometimes `plan --list`) re-runs;
 * - the application: several sessions insert, update and delete rows,
 *   naming legacy AND target keys (and now and then another spelling), each
 *   write of a path made just after a HEAD saw its object exist; short
 *   transactions and long ones (up to ~4 s, some REPEATABLE READ, a few
 *   rolled back);
 * - chaos: at a random moment after the ledger last moved (so that work
 *   happens between two signals, however slow the machine), a running
 *   `execute` or `plan` is SIGKILLed,
 *   or an `execute` or `revert` is SIGSTOPped for longer than the lease and
 *   then SIGCONTinued (its leases meanwhile taken over by the others).
 *
 * `revert` is frozen but never SIGKILLed, here: a killed revert leaves keys
 * `reverting` (rows back on the source, the target copy not yet deleted),
 * which only a later revert finishes, claiming in id order, so a final
 * `plan` + `execute` could not settle them and the end state could not
 * validate. That is safe for the invariant (rows name the source, which
 * exists) and covered by test/revert.test.ts ("revert killed (SIGKILL) with
 * keys part-way back, then resumed").
 *
 * Then the chaos stops (every execute and plan still running is SIGKILLed,
 * a revert still running is let finish), a final
 * `plan` and `execute --retry-failed` run, the observer makes its last poll,
 * and `validate` runs.
 *
 * Every random choice comes from one seeded PRNG per actor, so a seed fixes
 * the sequence of decisions (not the timing of the machine): a failing seed
 * is worth replaying, and a different seed tries different things.
 *
 * Results are returned, never asserted here: the test and the soak decide.
 */
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { guardChild } from '../../scripts/lib/child-reaper.js';
import { spawnCli, type CliResult } from '../helpers/cli.js';
import { resolvePath, startInvariantObserver, type Violation } from './invariant-observer.js';

/** Where the scenario runs: a fresh database and two fresh buckets. */
export interface ScenarioEnv {
  databaseUrl: string;
  /** The CLI's whole environment (DATABASE_URL, S3_ENDPOINT, AWS_*, SOURCE_BUCKET, TARGET_BUCKET). */
  env: NodeJS.ProcessEnv;
  s3client: S3Client;
  sourceBucket: string;
  targetBucket: string;
}

/** Knobs of one cycle; every one has a default sized for the 2-core CI machine. */
export interface AdversarialConfig {
  /** The PRNG seed: the same seed makes the same decisions. */
  seed: number;
  /** Legacy keys seeded (default 600). */
  keys?: number;
  /** Modern keys already under the target prefix (default 20). */
  modern?: number;
  /** Extra rows naming a seeded key in another spelling, before the plan (default 4). */
  otherSpellings?: number;
  /** Share of the application's writes that use another spelling (default 0.03). */
  otherSpellingRate?: number;
  /** How long the chaos lasts (default 45 s). */
  chaosSeconds?: number;
  /** `--lease-seconds` of every execute and revert (default 3). */
  leaseSeconds?: number;
  /** Application sessions writing at once (default 3; 0: no application). */
  appSessions?: number;
  /** Run the revert loop (default true). */
  reverts?: boolean;
  /** One line per notable event (spawns, signals, exits); quiet by default. */
  log?: (line: string) => void;
  /** Called for each violation as soon as the observer proves it. */
  onViolation?: (violation: Violation) => void;
}

/** What one cycle did and found. */
export interface ScenarioResult {
  seed: number;
  /** Violations the observer proved (the first 1,000). */
  violations: Violation[];
  violationCount: number;
  /** Complete observer polls, and polls that could not complete. */
  checks: number;
  observerErrors: number;
  /** Counters: `execute exit 0`, `revert exit 2`, `SIGKILL`, `SIGSTOP`, `app update target`, ... */
  counts: Record<string, number>;
  /** Lines of stderr that look like a crash (a stack trace or "unexpected error"), the first 20. */
  anomalies: string[];
  finalPlan: CliResult;
  finalExecute: CliResult;
  validate: CliResult;
  /** Ledger keys per state when the chaos ended (before the final run): how far the chaos got. */
  chaosStates: Record<string, number>;
  /** Ledger keys per state at the end. */
  states: Record<string, number>;
  /** Keys left `failed` at the end, with their last error. */
  failedKeys: Array<{ key: string; error: string }>;
  /** Keys that some row names in another spelling (`/image/x`, `s3://...`) at the end. */
  otherSpellingKeys: string[];
  seconds: number;
}

/** A small, fast, seedable PRNG (mulberry32). */
export interface Random {
  /** In [0, 1). */
  next(): number;
  /** An integer in [min, max]. */
  int(min: number, max: number): number;
  /** A number in [min, max). */
  between(min: number, max: number): number;
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
}

export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    between: (min, max) => min + next() * (max - min),
    chance: (p) => next() < p,
    pick: (items) => items[Math.floor(next() * items.length)]!,
  };
}

/** The seed to use: `ADVERSARIAL_SEED` from the environment if set, else `fallback`. */
export function seedFromEnv(fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.ADVERSARIAL_SEED;
  if (raw === undefined || raw === '') return fallback;
  const seed = Number(raw);
  if (!Number.isSafeInteger(seed)) throw new Error(`ADVERSARIAL_SEED must be an integer, got ${JSON.stringify(raw)}`);
  return seed;
}

/** What a process is; the chaos signals only `execute`, `revert` and `plan`. */
type Kind = 'execute' | 'revert' | 'plan' | 'seed' | 'final plan' | 'final execute' | 'validate';

interface Running {
  kind: Kind;
  label: string;
  pid: number;
  /** Date.now() at spawn. */
  since: number;
  stopped: boolean;
  kill(signal: NodeJS.Signals): void;
  result: Promise<CliResult>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs one cycle of the scenario on `env` (fresh database and buckets) and
 * returns what happened. Every process it starts is dead when it returns or
 * throws (and, through child-reaper, if this process dies first).
 */
export async function runAdversarialScenario(target: ScenarioEnv, config: AdversarialConfig): Promise<ScenarioResult> {
  const started = Date.now();
  const keys = config.keys ?? 600;
  const modern = config.modern ?? 20;
  const lease = config.leaseSeconds ?? 3;
  const chaosMs = (config.chaosSeconds ?? 45) * 1000;
  const log = config.log ?? (() => undefined);
  const counts: Record<string, number> = {};
  const count = (what: string, n = 1) => (counts[what] = (counts[what] ?? 0) + n);
  const anomalies: string[] = [];
  const live = new Set<Running>();
  let serial = 0;

  const spawn = (kind: Kind, args: string[], timeoutMs: number): Running => {
    const spawned = spawnCli(args, { env: target.env, timeoutMs });
    const guard = guardChild(spawned.child);
    const label = `${kind}#${++serial}`;
    const running: Running = {
      kind,
      label,
      pid: spawned.child.pid ?? -1,
      since: Date.now(),
      stopped: false,
      kill: (signal) => {
        try {
          spawned.child.kill(signal);
        } catch {
          // Already gone.
        }
      },
      result: spawned.result.finally(() => {
        guard.release();
        live.delete(running);
      }),
    };
    live.add(running);
    log(`${label} ${args.join(' ')}`);
    return running;
  };

  const settle = async (running: Running): Promise<CliResult> => {
    let result: CliResult;
    try {
      result = await running.result;
    } catch (err) {
      // Only a timeout (the process was killed) or a failure to spawn.
      count(`${running.kind} timed out`);
      anomalies.length < 20 && anomalies.push(`${running.label}: ${(err as Error).message.split('\n')[0]}`);
      return { code: null, signal: 'SIGKILL', stdout: '', stderr: '' };
    }
    const outcome = result.signal ? result.signal : `exit ${result.code}`;
    count(`${running.kind} ${outcome}`);
    log(`${running.label} ended: ${outcome}${result.stderr.trim() ? `: ${tail(result.stderr, 3).replace(/\n/g, ' | ')}` : ''}`);
    for (const line of result.stderr.split('\n')) {
      if (anomalies.length < 20 && (/^\s+at .+:\d+:\d+\)?$/.test(line) || /unexpected error/i.test(line))) {
        anomalies.push(`${running.label}: ${line.trim()}`);
      }
    }
    return result;
  };

  const cli = async (kind: Kind, args: string[], timeoutMs: number) => settle(spawn(kind, args, timeoutMs));

  /** SIGKILLs every process; a revert is first given `revertGraceMs` to finish (see the header). */
  const killAll = async (revertGraceMs = 0) => {
    const all = [...live];
    for (const r of all) {
      r.kill('SIGCONT');
      if (r.kind !== 'revert' || revertGraceMs === 0) r.kill('SIGKILL');
    }
    const reverts = all.filter((r) => r.kind === 'revert' && revertGraceMs > 0);
    if (reverts.length > 0) {
      const timer = setTimeout(() => reverts.forEach((r) => r.kill('SIGKILL')), revertGraceMs);
      await Promise.allSettled(reverts.map((r) => r.result));
      clearTimeout(timer);
    }
    await Promise.allSettled(all.map((r) => r.result));
  };

  let observer: ReturnType<typeof startInvariantObserver> | undefined;
  let chaosOver = false;
  try {
    // --- setup: the seed's table (no index on path), a few other spellings, one plan.
    const seeded = await cli('seed', ['seed', '--count', String(keys), '--modern', String(modern), '--quiet'], 300_000);
    if (seeded.code !== 0) throw new Error(`seed failed (exit ${seeded.code}): ${seeded.stderr}`);
    await withClient(target.databaseUrl, async (c) => {
      const spellings = config.otherSpellings ?? 4;
      for (let i = 1; i <= spellings; i++) {
        const key = `image/avatar-${1 + ((i * 97) % keys)}.png`;
        await c.query('insert into avatars (path) values ($1)', [i % 2 ? `/${key}` : `s3://${target.sourceBucket}/${key}`]);
      }
    });
    const firstPlan = await cli('plan', ['plan'], 120_000);
    if (firstPlan.code !== 0) throw new Error(`plan failed (exit ${firstPlan.code}): ${firstPlan.stderr}`);

    observer = startInvariantObserver({
      databaseUrl: target.databaseUrl,
      s3client: target.s3client,
      sourceBucket: target.sourceBucket,
      targetBucket: target.targetBucket,
      onViolation: config.onViolation,
    });

    // --- the chaos.
    // The chaos lasts chaosSeconds, and longer (up to 3x) until the ledger
    // shows real work: on a loaded machine the processes spend seconds
    // starting, and a chaos that only ever hits start-ups proves little.
    // Progress is read from the ledger, never timed.
    const chaosStart = Date.now();
    let ledgerNow = await ledgerStates(target.databaseUrl);
    const moved = () => keys - (ledgerNow.pending ?? 0) - (ledgerNow.copied ?? 0);
    const chaosOn = () => {
      if (chaosOver) return false;
      const elapsed = Date.now() - chaosStart;
      chaosOver = elapsed >= 3 * chaosMs || (elapsed >= chaosMs && moved() >= keys * 0.6);
      return !chaosOver;
    };
    const watcher = (async () => {
      while (chaosOn()) {
        await sleep(250);
        ledgerNow = await ledgerStates(target.databaseUrl).catch(() => ledgerNow);
      }
    })();
    const actors: Array<Promise<void>> = [];
    // A frozen execute does not count: its heartbeat goes stale, so it must
    // not block a revert (and a revert beside it is the point: finding 3).
    const executesLive = () => [...live].some((r) => r.kind === 'execute' && !r.stopped);
    // Set by the revert loop after its revert was refused twice in a row (a
    // tool that keeps execute and revert apart answers exit 2): the execute
    // loops start nothing new until that revert has run, so revert still
    // gets its turns.
    let revertWanted = false;

    for (const n of [1, 2]) {
      const rnd = seededRandom(config.seed * 16 + n);
      actors.push(
        (async () => {
          while (chaosOn()) {
            while (revertWanted && chaosOn()) await sleep(100);
            const mode = rnd.pick([[], [], [], ['--keep-source'], ['--delete-only']] as string[][]);
            await cli(
              'execute',
              [
                'execute',
                ...mode,
                '--threads', String(rnd.pick([1, 1, 2])),
                '--batch-size', String(rnd.int(5, 40)),
                '--concurrency', String(rnd.int(2, 8)),
                '--lease-seconds', String(lease),
                '--backoff-seconds', '1',
                '--quiet',
              ],
              3 * chaosMs + 120_000,
            );
            await sleep(rnd.between(200, 2_500));
          }
        })(),
      );
    }

    actors.push(
      (async () => {
        if (config.reverts === false) return;
        const rnd = seededRandom(config.seed * 16 + 3);
        let refusedInARow = 0;
        while (chaosOn()) {
          await sleep(rnd.between(1_000, 3_500));
          if (refusedInARow >= 2) {
            // Mutual exclusion refuses a revert beside a live execute: ask for
            // a gap (the running executes end, or the chaos kills them).
            revertWanted = true;
            while (executesLive() && chaosOn()) await sleep(100);
          }
          if (!chaosOn()) break;
          const result = await cli(
            'revert',
            ['revert', '--limit', String(rnd.int(5, 40)), '--batch-size', String(rnd.int(5, 25)), '--concurrency', '4',
              '--lease-seconds', String(lease), '--backoff-seconds', '1', '--quiet'],
            3 * chaosMs + 120_000,
          ).finally(() => (revertWanted = false));
          refusedInARow = result.code === 2 ? refusedInARow + 1 : 0;
          if (result.code === 2) count('revert refused');
        }
      })(),
    );

    actors.push(
      (async () => {
        const rnd = seededRandom(config.seed * 16 + 4);
        while (chaosOn()) {
          await sleep(rnd.between(2_000, 6_000));
          if (!chaosOn()) break;
          await cli('plan', rnd.chance(0.2) ? ['plan', '--list'] : ['plan'], chaosMs + 120_000);
        }
      })(),
    );

    actors.push(
      (async () => {
        const rnd = seededRandom(config.seed * 16 + 5);
        while (chaosOn()) {
          // Signal only after the ledger moved since the last signal, at a
          // random moment after that: the processes get to do work between two
          // signals however slow the machine is.
          const before = JSON.stringify(ledgerNow);
          while (chaosOn() && JSON.stringify(ledgerNow) === before) await sleep(250);
          await sleep(rnd.between(500, 3_000));
          // A process is signalled once it has had a second to start (node,
          // connections, checks): killing start-ups over and over tests little.
          const candidates = [...live].filter(
            (r) => !r.stopped && (r.kind === 'execute' || r.kind === 'revert' || r.kind === 'plan') && Date.now() - r.since > 1_000,
          );
          if (candidates.length === 0 || !chaosOn()) continue;
          // Executes live longest; without weights they would take nearly every signal.
          const kind = rnd.pick(['execute', 'execute', 'execute', 'execute', 'revert', 'revert', 'plan'] as const);
          const victim = rnd.pick(candidates.some((r) => r.kind === kind) ? candidates.filter((r) => r.kind === kind) : candidates);
          const stoppedNow = [...live].filter((r) => r.stopped).length;
          if (victim.kind === 'revert' && stoppedNow >= 2) continue;
          if (victim.kind !== 'revert' && (stoppedNow >= 2 || victim.kind === 'plan' || rnd.chance(0.4))) {
            count('SIGKILL');
            log(`SIGKILL ${victim.label}`);
            victim.kill('SIGKILL');
          } else {
            const ms = Math.round((lease + rnd.between(0.5, 2.5)) * 1000);
            count('SIGSTOP');
            log(`SIGSTOP ${victim.label} for ${ms} ms (lease ${lease} s)`);
            victim.stopped = true;
            victim.kill('SIGSTOP');
            void sleep(ms).then(() => {
              victim.stopped = false;
              victim.kill('SIGCONT');
            });
          }
        }
      })(),
    );

    for (let s = 0; s < (config.appSessions ?? 3); s++) {
      const app = new Application(target, seededRandom(config.seed * 16 + 6 + s), keys, modern, config.otherSpellingRate ?? 0.03, count);
      actors.push(app.run(chaosOn));
    }

    // --- the end: stop everything (processes still running are killed, as
    // often as it takes for every actor to notice), then one final run must converge.
    let actorsDone = false;
    const allActors = Promise.all(actors).finally(() => (actorsDone = true));
    // Rethrown below; handled at once so an early failure is not "unhandled" meanwhile.
    allActors.catch(() => undefined);
    await watcher;
    while (!actorsDone) {
      await killAll(120_000);
      await Promise.race([allActors, sleep(200)]);
    }
    await allActors;
    await killAll();
    const chaosStates = await ledgerStates(target.databaseUrl);
    log(`chaos over; ledger ${JSON.stringify(chaosStates)}`);
    const finalPlan = await cli('final plan', ['plan'], 120_000);
    const finalExecute = await cli(
      'final execute',
      ['execute', '--retry-failed', '--threads', '2', '--lease-seconds', String(lease), '--backoff-seconds', '1', '--quiet'],
      300_000,
    );
    await observer.stop();
    const validate = await cli('validate', ['validate'], 120_000);
    const failedKeys = await withClient(target.databaseUrl, async (c) =>
      (await c.query<{ key: string; error: string }>(
        `select src_key as key, coalesce(last_error, '') as error from bucket_migrate.migration_ledger where state = 'failed' order by src_key`,
      )).rows,
    );
    const spelled = await withClient(target.databaseUrl, async (c) =>
      (await c.query<{ path: string }>(`select distinct path from avatars where path like '/%' or path like '%://%'`)).rows,
    );
    const otherSpellingKeys = [...new Set(spelled.flatMap(({ path }) => {
      const object = resolvePath(path, {
        source: { bucket: target.sourceBucket, prefix: 'image/' },
        target: { bucket: target.targetBucket, prefix: 'avatar/' },
      });
      return object ? [object.key] : [];
    }))].sort();
    const states = await ledgerStates(target.databaseUrl);
    return {
      seed: config.seed,
      violations: observer.violations,
      violationCount: observer.violationCount,
      checks: observer.checks,
      observerErrors: observer.errors,
      counts,
      anomalies,
      finalPlan,
      finalExecute,
      validate,
      states,
      chaosStates,
      failedKeys,
      otherSpellingKeys,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
  } finally {
    chaosOver = true;
    await killAll();
    await observer?.halt();
  }
}

/**
 * The application: one session (its own connection) writing rows the way
 * an application does while the migration runs. A path is written only
 * just after a HEAD saw its object exist.
 */
class Application {
  private maxId: number;

  constructor(
    private readonly target: ScenarioEnv,
    private readonly rnd: Random,
    private readonly keys: number,
    private readonly modern: number,
    private readonly otherSpellingRate: number,
    private readonly count: (what: string, n?: number) => void,
  ) {
    this.maxId = keys + modern;
  }

  async run(going: () => boolean): Promise<void> {
    const client = new pg.Client({ connectionString: this.target.databaseUrl, application_name: 'adversarial-app' });
    client.on('error', () => undefined);
    await client.connect();
    try {
      await client.query(`set statement_timeout = '60s'`);
      while (going()) {
        if (this.rnd.chance(0.3)) await this.longTransaction(client);
        else await this.write(client).catch((err) => this.count(`app error ${(err as { code?: string }).code ?? 'other'}`));
        await sleep(this.rnd.between(10, 120));
      }
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** BEGIN, 2-4 writes with pauses between them (1-4 s in all), then COMMIT (or, now and then, ROLLBACK). */
  private async longTransaction(client: pg.Client): Promise<void> {
    const repeatable = this.rnd.chance(0.4);
    const writes = this.rnd.int(2, 4);
    const rollback = this.rnd.chance(0.1);
    try {
      await client.query(repeatable ? 'begin isolation level repeatable read' : 'begin');
      for (let i = 0; i < writes; i++) {
        await this.write(client);
        await sleep(this.rnd.between(200, 1_000));
      }
      await client.query(rollback ? 'rollback' : 'commit');
      this.count(`app long transaction ${rollback ? 'rolled back' : 'committed'}${repeatable ? ' (repeatable read)' : ''}`);
    } catch (err) {
      this.count(`app error ${(err as { code?: string }).code ?? 'other'}`);
      await client.query('rollback').catch(() => undefined);
    }
  }

  /** One insert, update or delete. */
  private async write(client: pg.Client): Promise<void> {
    const roll = this.rnd.next();
    if (roll < 0.12) {
      const id = this.rnd.int(1, this.maxId);
      await client.query('delete from avatars where id = $1', [id]);
      this.count('app delete');
      return;
    }
    const legacy = this.rnd.chance(0.5);
    const path = await this.seenPath(legacy);
    if (path === undefined) return;
    if (roll < 0.4) {
      const inserted = await client.query<{ id: number }>('insert into avatars (path) values ($1) returning id', [path]);
      this.maxId = Math.max(this.maxId, inserted.rows[0]?.id ?? 0);
      this.count(`app insert ${legacy ? 'legacy' : 'target'}`);
    } else {
      await client.query('update avatars set path = $1 where id = $2', [path, this.rnd.int(1, this.maxId)]);
      this.count(`app update ${legacy ? 'legacy' : 'target'}`);
    }
  }

  /**
   * A path whose object a HEAD has just seen: a legacy key (`image/...` in
   * the source bucket) or a target key (`avatar/...`, modern ones included,
   * in the target bucket); undefined when the chosen object is not there.
   */
  private async seenPath(legacy: boolean): Promise<string | undefined> {
    const modern = !legacy && this.rnd.chance(0.15);
    const name = modern ? `avatar-m${this.rnd.int(1, this.modern)}.png` : `avatar-${this.rnd.int(1, this.keys)}.png`;
    const key = `${legacy ? 'image/' : 'avatar/'}${name}`;
    const bucket = legacy ? this.target.sourceBucket : this.target.targetBucket;
    try {
      await this.target.s3client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: AbortSignal.timeout(5_000) });
    } catch {
      this.count(`app saw no ${legacy ? 'legacy' : 'target'} object`);
      return undefined;
    }
    if (this.rnd.chance(this.otherSpellingRate)) {
      this.count('app other spelling');
      return this.rnd.chance(0.5) ? `/${key}` : `s3://${bucket}/${key}`;
    }
    return key;
  }
}

async function ledgerStates(url: string): Promise<Record<string, number>> {
  const rows = await withClient(url, (c) =>
    c.query<{ state: string; n: number }>('select state, count(*)::int as n from bucket_migrate.migration_ledger group by state order by state'),
  );
  return Object.fromEntries(rows.rows.map((r) => [r.state, r.n]));
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: 'adversarial-setup' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The last `lines` lines of `text`. */
export function tail(text: string, lines: number): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

/**
 * Whether the final run converged: plan exit 0; execute exit 0, or exit 1
 * with every key it left `failed` named by a row in another spelling (a
 * tool may refuse to delete such a source, and keep it: issue 12); and
 * validate exit 0. Returns the reasons it did not, empty when it did.
 */
export function convergenceProblems(r: ScenarioResult): string[] {
  const problems: string[] = [];
  if (r.finalPlan.code !== 0) problems.push(`final plan exit ${r.finalPlan.code}: ${tail(r.finalPlan.stderr, 5)}`);
  const unexplained = r.failedKeys.filter((f) => !r.otherSpellingKeys.includes(f.key));
  const executeOk = r.finalExecute.code === 0 || (r.finalExecute.code === 1 && r.failedKeys.length > 0 && unexplained.length === 0);
  if (!executeOk) problems.push(`final execute exit ${r.finalExecute.code}: ${tail(r.finalExecute.stderr, 10)}`);
  for (const f of unexplained.slice(0, 10)) problems.push(`key ${f.key} failed with no row naming it in another spelling: ${f.error}`);
  if (r.validate.code !== 0) {
    const lines = (r.validate.stdout + r.validate.stderr).split('\n').filter((l) => !/known exception: key is/.test(l));
    problems.push(`validate exit ${r.validate.code}: ${tail(lines.join('\n'), 40)}`);
  }
  return problems;
}

/** One line summing up a cycle, for logs and assertion messages. */
export function describeResult(r: ScenarioResult): string {
  const counts = Object.entries(r.counts)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  const kinds = { legacy: 0, target: 0, 'other spelling': 0 };
  for (const v of r.violations) {
    if (v.path !== v.key) kinds['other spelling'] += 1;
    else if (v.key.startsWith('image/')) kinds.legacy += 1;
    else kinds.target += 1;
  }
  const violations = r.violationCount === 0 ? '' : ` (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(', ')})`;
  return (
    `seed ${r.seed}: ${r.violationCount} violations${violations}, ${r.checks} observer checks (${r.observerErrors} failed), ${r.seconds} s; ` +
    `final plan exit ${r.finalPlan.code}, execute exit ${r.finalExecute.code}, validate exit ${r.validate.code}; ` +
    `ledger after the chaos ${JSON.stringify(r.chaosStates)}, at the end ${JSON.stringify(r.states)}; ${counts}`
  );
}
