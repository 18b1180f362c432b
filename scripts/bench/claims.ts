/**
 * The ledger's own throughput, without S3: how many rows a claim hands out
 * per second, and how many keys per second go through the whole per-batch
 * cycle of statements (claim, copied, commit table+ledger, done), with
 * `lanes` connections at once, as that many worker lanes (on one machine or
 * many) would. This is what bounds scale-out against one Postgres.
 */
import { sql } from 'kysely';
import { createDatabase } from '../../src/db/database.js';
import { claimBatch, commitRows, markCopied, markDone, type LedgerContext } from '../../src/ledger/state-machine.js';

export interface ClaimResult {
  lanes: number;
  batchSize: number;
  claimOnly: { rows: number; seconds: number; rowsPerSecond: number; statementsPerSecond: number };
  fullCycle: { rows: number; seconds: number; rowsPerSecond: number; statementsPerSecond: number };
}

export async function measureClaims(options: {
  url: string;
  schema: string;
  table: string;
  lanes: number;
  batchSize: number;
  seconds: number;
}): Promise<ClaimResult> {
  const db = createDatabase({ url: options.url, max: options.lanes, applicationName: 'bucket-migrate bench' });
  const context = (lane: number): LedgerContext => ({
    db,
    schema: options.schema,
    table: { name: options.table },
    idColumn: 'id',
    pathColumn: 'path',
    idCast: 'int4',
    me: `bench/claims-${lane}`,
  });
  try {
    const measure = async (cycle: (ctx: LedgerContext) => Promise<number>, statementsPerBatch: number) => {
      const started = performance.now();
      const deadline = started + options.seconds * 1000;
      let rows = 0;
      let batches = 0;
      await Promise.all(
        Array.from({ length: options.lanes }, async (_, lane) => {
          const ctx = context(lane);
          while (performance.now() < deadline) {
            const n = await cycle(ctx);
            if (n === 0) return;
            rows += n;
            batches += 1;
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      return { rows, seconds, rowsPerSecond: rows / seconds, statementsPerSecond: (batches * statementsPerBatch) / seconds };
    };
    const claimOnly = await measure(async (ctx) => (await claimBatch(ctx, options.batchSize, 600)).length, 1);
    // Give the claims back, or on a small ledger the cycle finds nothing left to claim.
    await sql`update ${sql.id(options.schema, 'migration_ledger')} set locked_by = null, locked_until = null where locked_by like 'bench/claims-%'`.execute(db);
    const fullCycle = await measure(async (ctx) => {
      const rows = await claimBatch(ctx, options.batchSize, 600);
      if (rows.length === 0) return 0;
      const copied = await markCopied(ctx, rows.map((r) => ({ id: r.id, dstEtag: '"bench"' })));
      const committed = await commitRows(ctx, copied);
      await markDone(ctx, committed.filter((c) => c.state === 'db_updated').map((c) => c.id));
      return rows.length;
    }, 4);
    return { lanes: options.lanes, batchSize: options.batchSize, claimOnly, fullCycle };
  } finally {
    await db.destroy();
  }
}
