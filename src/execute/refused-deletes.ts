import type { Kysely } from 'kysely';
import { listRefusedDeletes } from '../ledger/state-machine.js';
import { out } from '../util/output.js';

/**
 * Lists (on stderr) the keys whose source delete was refused because their
 * target is gone or changed, so the operator sees them at the end of the run
 * and not only in the ledger.
 */
export async function printRefusedDeletes(ctx: { db: Kysely<any>; schema: string }): Promise<void> {
  const refused = await listRefusedDeletes(ctx);
  if (refused.total === 0) return;
  out.error(`${refused.total} source deletes refused (the sources are kept, the keys are failed):`);
  for (const row of refused.rows) out.error(`  ${row.src_key} -> ${row.dst_key}: ${row.last_error}`);
  if (refused.total > refused.rows.length) out.error(`  ... and ${refused.total - refused.rows.length} more (see bucket-migrate report)`);
  out.error('restore each target and run execute --delete-only --retry-failed, or run bucket-migrate revert to move those rows back');
}
