import type { S3Client } from '@aws-sdk/client-s3';
import type { Kysely } from 'kysely';
import { describeConfig, requireDatabaseUrl, type MigrateConfig } from '../config/config.js';
import { formatTableName } from '../config/identifiers.js';
import { checkConnection, createDatabase } from '../db/database.js';
import { withDbRetry } from '../db/retry.js';
import { migrateLedger } from '../db/migrate.js';
import { inspectTable } from '../db/table-info.js';
import { UsageError, oneLine } from '../errors.js';
import { discardNewLedger, ledgerBefore } from '../ledger/discard-ledger.js';
import { bindLedgerConfig } from '../ledger/ledger-config.js';
import { countStates, finishRun, startRun } from '../ledger/runs.js';
import { out } from '../util/output.js';
import type { ListResult } from './list-source.js';
import type { PathLimit } from './key-refusal.js';
import { countOutside, outsideTotal, type OutsideRows } from './outside.js';
import { recordSpelledReferences, snapshotTable, type SnapshotResult } from './snapshot.js';
import { describePlannedGuard, guardStatus, installGuardTrigger, recordGuardSnapshot, snapshotClock, type GuardMode } from '../guard/guard.js';

/** Options of `plan`. */
export interface PlanOptions {
  /** Also list the source bucket (`--list`). */
  list: boolean;
  /** Or read this S3 Inventory report as the listing (`--inventory s3://.../manifest.json`). */
  inventory?: string;
  orphans: 'move' | 'skip';
  json: boolean;
}

/** What `plan` did, as printed with `--json`. */
export interface PlanResult {
  runId: number;
  snapshot: SnapshotResult;
  listing?: ListResult;
  /** Table rows under neither prefix (NULL, empty, leading '/', other): left alone. */
  outside: OutsideRows;
  /** Keys in the ledger after this plan. */
  total: number;
  states: Record<string, number>;
  /** Rows naming a planned key in another spelling: their sources are kept while they do. */
  spelled: number;
  /** The guard the delete phase will use (src/guard/guard.ts). */
  guard: GuardMode;
}

/**
 * Snapshots the table into the ledger (creating the ledger schema first),
 * then optionally reconciles the ledger with a listing of the source.
 */
export async function plan(config: MigrateConfig, options: PlanOptions): Promise<PlanResult> {
  const url = requireDatabaseUrl(config);
  // Listing ranges reconcile their pages at once (plan --list): a few connections.
  const db = createDatabase({ url, max: 6 });
  // The AWS SDK loads with the command: `--help` and the other commands need none of it.
  const [{ createS3Client }, { checkLocation }] = await Promise.all([import('../s3/client.js'), import('../s3/preflight.js')]);
  const s3 = createS3Client(config.s3, { maxSockets: 32 });
  try {
    // Every check that can refuse the command comes before the first write:
    // a mistyped bucket must leave no schema, no ledger_config bound to it
    // and no run row behind, so the corrected command simply works.
    await checkConnection(db, url);
    const schema = config.ledgerSchema;
    const tableInfo = await inspectTable(db, config.table, config.idColumn, config.pathColumn);
    await checkLocation(s3, config.source, 'SOURCE_BUCKET');
    await checkLocation(s3, config.target, 'TARGET_BUCKET');
    // A wrong inventory (another bucket, not CSV) is refused before the ledger changes.
    let manifest: import('./inventory.js').InventoryManifest | undefined;
    if (options.inventory) {
      const { readInventoryManifest } = await import('./inventory.js');
      manifest = await readInventoryManifest(s3, options.inventory, config.source.bucket);
    }
    const before = await ledgerBefore(db, schema);
    let runId: number | undefined;
    try {
      await migrateLedger(db, schema);
      await bindLedgerConfig(db, config, 'plan');
      // The guard trigger goes in BEFORE the snapshot: CREATE TRIGGER waits
      // for every transaction that already wrote the table, so every write
      // committed after it is recorded (or redirected) by the trigger, and
      // the snapshot taken after it misses nothing.
      await installGuardTrigger(db, config);
      const guard = await guardStatus(db, config, tableInfo.hasPathIndex);
      const snapshotAt = await snapshotClock(db);
      runId = await startRun(db, schema, options.inventory ? 'plan --inventory' : options.list ? 'plan --list' : 'plan', describeConfig(config));
      const result = await planInto(db, s3, url, config, options, runId, tableInfo.pathLimit, { guard, snapshotAt }, manifest);
      // After the snapshot: a plan that fails says so in one line.
      if (!options.json) out.info(describePlannedGuard(guard, config));
      return result;
    } catch (err) {
      // A ledger this command created is removed again; an existing one keeps what it had and the run is closed.
      if (!before.ledger) await discardNewLedger(db, schema, before).catch(() => undefined);
      else if (runId !== undefined) await finishRun(db, schema, runId, 'failed', err instanceof UsageError ? 2 : 1, { error: oneLine(err) }).catch(() => undefined);
      throw err;
    }
  } finally {
    s3.destroy();
    await db.destroy();
  }
}

async function planInto(
  db: Kysely<any>,
  s3: S3Client,
  url: string,
  config: MigrateConfig,
  options: PlanOptions,
  runId: number,
  pathLimit: PathLimit | undefined,
  guarding: { guard: Awaited<ReturnType<typeof guardStatus>>; snapshotAt: Awaited<ReturnType<typeof snapshotClock>> },
  manifest: import('./inventory.js').InventoryManifest | undefined,
): Promise<PlanResult> {
  const { guard, snapshotAt } = guarding;
  const schema = config.ledgerSchema;
  const ctx = { db, url, schema, table: config.table, idColumn: config.idColumn, pathColumn: config.pathColumn, pathLimit };
  // The count of rows outside both prefixes reads only the table: it runs
  // on the pool's other connection while the snapshot's reader is still
  // scanning and sorting (the loading backend idles until the first
  // sorted row), so it costs no wall-clock time.
  const counting = countOutside(ctx, config.source.prefix, config.target.prefix);
  counting.catch(() => undefined); // awaited below; a snapshot failure wins
  const { snapshot, bulk } = await snapshotTable(ctx, config.source.prefix, config.target.prefix, runId);
  const outside = await counting;
  // Rows naming a ledger key in another spelling ('/key', s3://, https://)
  // are not moved, and their sources must not be deleted while they do:
  // they are recorded so that the delete's check finds them by id.
  // One statement, harmless to run again (on conflict do nothing): retried
  // when a concurrent execute or application write deadlocks with it.
  const spelled = await withDbRetry(() => recordSpelledReferences({ db, schema, table: config.table, idColumn: config.idColumn, pathColumn: config.pathColumn }, config.source));
  if (guard.triggerInstalled) await withDbRetry(() => recordGuardSnapshot(db, schema, snapshotAt));
  let listing: ListResult | undefined;
  if (options.list || options.inventory) {
    const [{ reconcileWithListing }, { reconcileWithInventory }] = await Promise.all([import('./list-source.js'), import('./inventory.js')]);
    const listConfig = { bucket: config.source.bucket, sourcePrefix: config.source.prefix, targetPrefix: config.target.prefix, orphans: options.orphans, runId, pathLimit };
    const progress = (listed: number) => {
      if (!options.json && listed % 100_000 === 0) out.info(`plan: ${listed} objects ${options.inventory ? 'read from the inventory' : 'listed'}`);
    };
    listing = options.inventory
      ? await reconcileWithInventory(ctx, s3, options.inventory, listConfig, progress, manifest)
      : await reconcileWithListing(ctx, s3, listConfig, progress);
  }
  // After a bulk load into the empty ledger, every key is pending or
  // refused: no need to scan a million rows to count them.
  const states = bulk && !listing ? bulkStates(snapshot) : await countStates(db, schema);
  const total = Object.values(states).reduce((a, b) => a + b, 0);
  await finishRun(db, schema, runId, 'succeeded', 0, { ...snapshot, ...(listing ? { listing } : {}), outside, total });
  const result: PlanResult = { runId, snapshot, listing, outside, total, states, spelled, guard: guard.triggerInstalled ? 'trigger' : guard.hasPathIndex ? 'index' : 'none' };
  if (options.json) out.result(JSON.stringify(result));
  else printPlan(config, result);
  return result;
}

function bulkStates(snapshot: SnapshotResult): Record<string, number> {
  const states: Record<string, number> = {};
  if (snapshot.added > snapshot.refused) states.pending = snapshot.added - snapshot.refused;
  if (snapshot.refused > 0) states.failed = snapshot.refused;
  return states;
}

function printPlan(config: MigrateConfig, result: PlanResult): void {
  const { snapshot, listing } = result;
  out.result(
    `plan: ${snapshot.added} keys added, ${snapshot.extended} keys gained referencing rows` +
      `${snapshot.refused ? `, ${snapshot.refused} refused (see report)` : ''}; ` +
      `${result.total} keys in the ledger (${formatTableName(config.table)} under ${config.source.prefix})`,
  );
  if (result.spelled > 0) {
    out.result(`plan: ${result.spelled} rows name a planned key in another spelling ('/key', s3://, https://): those sources are kept while such a row names them`);
  }
  const outside = outsideTotal(result.outside);
  if (outside > 0) {
    const o = result.outside;
    out.result(
      `plan: ${outside} rows outside both prefixes left alone (NULL ${o.null}, empty ${o.empty}, leading '/' ${o.leadingSlash}, ` +
        `elsewhere ${o.other})`,
    );
  }
  if (listing) {
    out.result(
      `plan --list: ${listing.listed} objects listed, ${listing.orphansAdded} orphans added` +
        `${listing.orphansSkipped ? `, ${listing.orphansSkipped} orphans skipped` : ''}, ${listing.missing} planned keys missing`,
    );
  }
}
