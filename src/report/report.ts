import { setTimeout as sleep } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import { requireDatabaseUrl, type MigrateConfig } from '../config/config.js';
import { checkConnection, createDatabase } from '../db/database.js';
import { UsageError } from '../errors.js';
import { ledgerExists } from '../ledger/ledger-config.js';
import { out } from '../util/output.js';
import { requireLedgerCounts } from '../ledger/ledger-counts.js';
import { collectReport } from './collect-report.js';
import { formatReport } from './format-report.js';

/** Options of `report`. */
export interface ReportOptions {
  json: boolean;
  /** Refresh every `intervalSeconds` until interrupted. */
  watch: boolean;
  intervalSeconds: number;
  /** Redraw in place (stdout is a terminal). */
  tty: boolean;
}

/**
 * Connects to the ledger read-only. Only the ledger schema is needed, not
 * the bucket settings, so a report can be read from anywhere that reaches
 * the database; what the ledger was planned for is shown from the ledger.
 */
export async function openLedgerForReading(config: MigrateConfig, connections = 2): Promise<Kysely<any>> {
  const url = requireDatabaseUrl(config);
  const db = createDatabase({ url, max: connections, applicationName: 'bucket-migrate report' });
  try {
    await checkConnection(db, url);
    if (!(await ledgerExists(db, config.ledgerSchema))) {
      throw new UsageError(`there is no ledger in schema ${config.ledgerSchema}: run bucket-migrate plan first (or set --ledger-schema)`);
    }
    await requireLedgerCounts(db, config.ledgerSchema);
    return db;
  } catch (err) {
    await db.destroy();
    throw err;
  }
}

/**
 * Prints the report once, or again every interval with `watch` until
 * SIGINT/SIGTERM. With `--json --watch` each refresh is one line of JSON
 * (NDJSON), so a consumer can read it line by line.
 */
export async function report(config: MigrateConfig, options: ReportOptions): Promise<void> {
  const db = await openLedgerForReading(config);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  if (options.watch) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  try {
    for (let first = true; first || !stop.signal.aborted; first = false) {
      const data = await collectReport(db, config.ledgerSchema);
      if (options.json) {
        out.result(JSON.stringify(data, null, options.watch ? undefined : 2));
      } else {
        // Clear the screen and home the cursor, like watch(1).
        if (options.watch && options.tty) process.stdout.write('\x1b[2J\x1b[H');
        for (const line of formatReport(data)) out.result(line);
        if (options.watch && !options.tty) out.result('');
      }
      if (!options.watch) break;
      await sleep(options.intervalSeconds * 1000, undefined, { signal: stop.signal }).catch(() => undefined);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await db.destroy();
  }
}
