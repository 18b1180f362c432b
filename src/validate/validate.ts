import { sql } from 'kysely';
import { formatTableName } from '../config/identifiers.js';
import type { MigrateConfig } from '../config/config.js';
import { inspectTable } from '../db/table-info.js';
import { bindLedgerConfig } from '../ledger/ledger-config.js';
import { ALL_STATES, type LedgerState } from '../ledger/state-machine.js';
import { openLedgerForReading } from '../report/report.js';
import { iso } from '../report/collect-report.js';
import { createS3Client } from '../s3/client.js';
import { checkLocation } from '../s3/preflight.js';
import { LEDGER_SETTLED, checkLedgerSettled } from './check-ledger-settled.js';
import { LEGACY_ROWS, checkLegacyRows } from './check-legacy-rows.js';
import { SOURCE_EMPTY, checkSourceEmpty } from './check-source-empty.js';
import { TARGET_OBJECTS, checkTargetObjects } from './check-target-objects.js';
import { sampleTargetObjects } from './sample-target-objects.js';
import { CHECKS, skippedCheck, type CheckKey, type CheckResult, type ValidateResult } from './validate-types.js';
import type { ValidateContext } from './validate-context.js';

/** Options of `validate`. */
export interface ValidateOptions {
  /** Known exceptions fail too. */
  strict: boolean;
  /** HEAD this many random target rows instead of the full merge. */
  sample?: number;
  /** HEADs in flight with `sample`. */
  concurrency: number;
  /** Which checks to run (all by default). */
  checks: readonly CheckKey[];
}

/**
 * Proves the end state from the table and the buckets themselves; the
 * ledger is consulted only to tell known exceptions from failures and for
 * the size and ETag each copy should have. Read-only everywhere: it needs
 * SELECT on the table and the ledger, and List/Head on both buckets.
 */
export async function validate(config: MigrateConfig, options: ValidateOptions): Promise<ValidateResult> {
  const db = await openLedgerForReading(config);
  const s3 = createS3Client(config.s3, { maxSockets: Math.max(4, options.concurrency) });
  try {
    // Validating a move the ledger was not planned for would prove nothing.
    await bindLedgerConfig(db, config, 'use');
    await inspectTable(db, config.table, config.idColumn, config.pathColumn);
    const want = new Set(options.checks);
    if (want.has('sourceEmpty') || want.has('legacyRows')) await checkLocation(s3, config.source, 'SOURCE_BUCKET');
    if (want.has('targetObjects')) await checkLocation(s3, config.target, 'TARGET_BUCKET');
    const ctx: ValidateContext = { db, s3, config, strict: options.strict };

    const run = async (key: CheckKey, description: string, fn: () => Promise<CheckResult>) =>
      want.has(key) ? fn() : skippedCheck(key, description);
    const checks: Record<CheckKey, CheckResult> = {
      legacyRows: await run('legacyRows', LEGACY_ROWS, () => checkLegacyRows(ctx)),
      targetObjects: await run('targetObjects', TARGET_OBJECTS, () =>
        options.sample !== undefined ? sampleTargetObjects(ctx, options.sample, options.concurrency) : checkTargetObjects(ctx),
      ),
      sourceEmpty: await run('sourceEmpty', SOURCE_EMPTY, () => checkSourceEmpty(ctx)),
      ledgerSettled: await run('ledgerSettled', LEDGER_SETTLED, () => checkLedgerSettled(ctx)),
    };

    const stateRows = (await sql<{ state: LedgerState; n: number }>`
      select state, count(*)::int as n from ${sql.id(config.ledgerSchema, 'migration_ledger')} group by state
    `.execute(db)).rows;
    const states = Object.fromEntries(ALL_STATES.map((s) => [s, 0])) as Record<LedgerState, number>;
    for (const row of stateRows) states[row.state] = row.n;
    const now = (await sql<{ now: Date }>`select now() as now`.execute(db)).rows[0]!.now;

    return {
      version: 1,
      ok: Object.values(checks).every((c) => c.ok),
      strict: options.strict,
      checkedAt: iso(now)!,
      ledgerSchema: config.ledgerSchema,
      source: `s3://${config.source.bucket}/${config.source.prefix}`,
      target: `s3://${config.target.bucket}/${config.target.prefix}`,
      table: formatTableName(config.table),
      planned: Object.values(states).reduce((a, b) => a + b, 0),
      states,
      checks,
    };
  } finally {
    s3.destroy();
    await db.destroy();
  }
}

/** Parses `--checks legacy-rows,target-objects`; undefined means all. */
export function parseChecks(value: string | undefined): CheckKey[] | string {
  const all = Object.keys(CHECKS) as CheckKey[];
  if (value === undefined) return all;
  const byName = new Map(all.map((k) => [CHECKS[k] as string, k]));
  const picked: CheckKey[] = [];
  for (const name of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const key = byName.get(name);
    if (!key) return name;
    if (!picked.includes(key)) picked.push(key);
  }
  return picked.length ? picked : '';
}
