import { describeConfig, requireDatabaseUrl, type MigrateConfig } from '../config/config.js';
import { formatTableName } from '../config/identifiers.js';
import { checkConnection, createDatabase } from '../db/database.js';
import { migrateLedger } from '../db/migrate.js';
import { inspectTable } from '../db/table-info.js';
import { bindLedgerConfig } from '../ledger/ledger-config.js';
import { countStates, finishRun, startRun } from '../ledger/runs.js';
import { out } from '../util/output.js';
import type { ListResult } from './list-source.js';
import { countOutside, outsideTotal, type OutsideRows } from './outside.js';
import { snapshotTable, type SnapshotResult } from './snapshot.js';

/** Options of `plan`. */
export interface PlanOptions {
  /** Also list the source bucket (`--list`). */
  list: boolean;
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
}

/**
 * Snapshots the table into the ledger (creating the ledger schema first),
 * then optionally reconciles the ledger with a listing of the source.
 */
export async function plan(config: MigrateConfig, options: PlanOptions): Promise<PlanResult> {
  const url = requireDatabaseUrl(config);
  const db = createDatabase({ url, max: 2 });
  try {
    await checkConnection(db, url);
    const schema = config.ledgerSchema;
    const tableInfo = await inspectTable(db, config.table, config.idColumn, config.pathColumn);
    await migrateLedger(db, schema);
    await bindLedgerConfig(db, config, 'plan');
    const runId = await startRun(db, schema, options.list ? 'plan --list' : 'plan', describeConfig(config));
    const ctx = { db, url, schema, table: config.table, idColumn: config.idColumn, pathColumn: config.pathColumn, pathLimit: tableInfo.pathLimit };
    // The count of rows outside both prefixes reads only the table: it runs
    // on the pool's other connection while the snapshot's reader is still
    // scanning and sorting (the loading backend idles until the first
    // sorted row), so it costs no wall-clock time.
    const counting = countOutside(ctx, config.source.prefix, config.target.prefix);
    counting.catch(() => undefined); // awaited below; a snapshot failure wins
    const { snapshot, bulk } = await snapshotTable(ctx, config.source.prefix, config.target.prefix, runId);
    const outside = await counting;
    let listing: ListResult | undefined;
    if (options.list) {
      // The AWS SDK is loaded only for --list: a plain plan never talks to S3.
      const [{ createS3Client }, { checkLocation }, { reconcileWithListing }] = await Promise.all([
        import('../s3/client.js'),
        import('../s3/preflight.js'),
        import('./list-source.js'),
      ]);
      const s3 = createS3Client(config.s3, { maxSockets: 4 });
      try {
        await checkLocation(s3, config.source, 'SOURCE_BUCKET');
        listing = await reconcileWithListing(
          ctx,
          s3,
          { bucket: config.source.bucket, sourcePrefix: config.source.prefix, targetPrefix: config.target.prefix, orphans: options.orphans, runId, pathLimit: tableInfo.pathLimit },
          (listed) => {
            if (!options.json && listed % 100_000 === 0) out.info(`plan --list: ${listed} objects listed`);
          },
        );
      } finally {
        s3.destroy();
      }
    }
    // After a bulk load into the empty ledger, every key is pending or
    // refused: no need to scan a million rows to count them.
    const states = bulk && !listing ? bulkStates(snapshot) : await countStates(db, schema);
    const total = Object.values(states).reduce((a, b) => a + b, 0);
    await finishRun(db, schema, runId, 'succeeded', 0, { ...snapshot, ...(listing ? { listing } : {}), outside, total });
    const result: PlanResult = { runId, snapshot, listing, outside, total, states };
    if (options.json) out.result(JSON.stringify(result));
    else printPlan(config, result);
    return result;
  } finally {
    await db.destroy();
  }
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
