/**
 * The adversarial test of issue 12: two `execute` processes, `revert`,
 * `plan` re-runs, an application writing legacy and target paths in short
 * and long transactions, and processes SIGSTOPped past their lease or
 * SIGKILLed at random moments, all at once, on the seed's table (no index on
 * the path column), with the invariant observer watching throughout. It
 * passes only if no row was ever proven to name a missing object, a final
 * `plan` + `execute` converges, and `validate` passes. The scenario is in
 * test/support/adversarial-scenario.ts (shared with `npm run soak`).
 *
 * The seed is fixed and printed; `ADVERSARIAL_SEED=<n>` replays another one
 * (the soak prints the seed of every cycle).
 *
 * On the main of 2026-12-01 (f844d21, before the guards of issue 12) this
 * test fails, as it should. With seed 1201 (600 keys, 45 s of chaos) the
 * observer proved 20 rows naming missing objects:
 * - 8 legacy rows (`image/x`) the application wrote after the plan, whose
 *   source was deleted (no index on the path column, so no look-up before
 *   the delete: finding 1);
 * - 9 rows naming a target (`avatar/x`) the application wrote after cutover,
 *   whose target revert deleted (it moves back only `rows_updated`:
 *   finding 2);
 * - 3 rows naming a key as `/image/x` or `s3://<bucket>/image/x`, whose
 *   object execute deleted (other spellings).
 * and validate failed (8 rows under avatar/ without an object). Narrowed
 * with `npm run soak -- --cycles 1 --seed 1201 ...` on the same main:
 * - `--app-sessions 0 --other-spellings 0` (executes, revert, plan, kills
 *   and freezes; no application): 0 violations;
 * - `--other-spellings 0 --no-revert` (the application, no revert): 13
 *   (10 legacy, 3 in the spellings the application wrote);
 * - `--app-sessions 0 --no-revert` (only the 4 rows in other spellings):
 *   4, every one of them.
 * Other runs of the full scenario with the same seed found 10 and 16
 * (timing differs; the seed fixes the decisions, not the machine).
 *
 * On branch `guard` (delete fence + trigger), 2026-12-01: seed 1201 passes
 * (0 violations; the final execute exits 1 only for the keys a row names in
 * another spelling, whose sources the guard keeps; validate exits 0). Seed
 * 1202 found, at guard c3cc42f, 2 rows naming a target that revert deleted
 * (rows 638 and 647, inserted by the application with `avatar/x`; validate
 * names them too; from the log, the revert that deleted those targets had
 * resumed keys an earlier revert left `reverting`: a reading, not yet
 * verified), and, at guard c3cc42f and
 * 7f54f42, keys left `reverting` for good: a revert whose fence wait (at
 * most a third of --lease-seconds) loses to a 1-4 s application
 * transaction gives its keys back and still exits 0, and later `revert
 * --limit N` runs claim by id, so no final plan + execute settles them
 * (validate: ledger-settled fails).
 */
import t from 'tap';
import { setupTestEnv } from './helpers/services.js';
import { convergenceProblems, describeResult, runAdversarialScenario, seedFromEnv } from './support/adversarial-scenario.js';

const seed = seedFromEnv(1201);

t.test(`everything at once never leaves a row naming a missing object (seed ${seed}; ADVERSARIAL_SEED replays another)`, async (t) => {
  const env = await setupTestEnv(t);
  t.comment(`seed ${seed}`);
  const result = await runAdversarialScenario(env, { seed, log: process.env.ADVERSARIAL_VERBOSE ? (line) => t.comment(line) : undefined });
  const summary = describeResult(result);
  t.comment(summary);
  for (const line of result.anomalies) t.comment(`anomaly: ${line}`);

  t.same(
    result.violations.slice(0, 20).map((v) => `${v.at} row ${v.rowId} -> ${v.path} (s3://${v.bucket}/${v.key} missing)`),
    [],
    `no row was ever proven to name a missing object (${result.violationCount} found, ${result.checks} checks; replay with ADVERSARIAL_SEED=${seed})`,
  );
  t.equal(result.violationCount, 0, 'no violation at all');

  // The chaos really happened (counts, not timings).
  t.ok((result.counts.SIGKILL ?? 0) >= 1, 'some process was SIGKILLed');
  t.ok((result.counts.SIGSTOP ?? 0) >= 1, 'some process was frozen past its lease');
  const ran = (kind: string) => Object.entries(result.counts).filter(([k]) => k.startsWith(`${kind} `)).reduce((n, [, v]) => n + v, 0);
  t.ok(ran('execute') >= 2, 'execute ran');
  t.ok(ran('revert') >= 1, 'revert was tried');
  t.ok(ran('plan') >= 1, 'plan re-ran');
  t.ok(ran('app insert') + ran('app update') >= 20, 'the application wrote');
  t.ok(result.checks >= 20, 'the observer really watched');

  // Converges: plan and validate exit 0; execute exits 0, or 1 only for
  // keys whose source a row names in another spelling (kept on purpose).
  t.same(convergenceProblems(result), [], 'a final plan + execute converges and validate passes');
});
