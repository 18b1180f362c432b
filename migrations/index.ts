import type { Migration } from 'kysely';
import { ledgerMigration } from './0001-ledger.js';
import { auditViewsMigration } from './0002-audit-views.js';
import { archivedStateMigration } from './0004-archived.js';
import { revertMigration } from './0005-revert.js';
import { claimByStateMigration } from './0010-claim-by-state.js';
import { ledgerCountsMigration } from './0010-ledger-counts.js';

/**
 * The ledger schema's migrations, in order. Names are numbered so that
 * kysely's alphabetical ordering is the intended one.
 */
export function ledgerMigrations(schema: string): Record<string, Migration> {
  return {
    '0001-ledger': ledgerMigration(schema),
    '0002-audit-views': auditViewsMigration(schema),
    '0004-archived': archivedStateMigration(schema),
    '0005-revert': revertMigration(schema),
    '0010-claim-by-state': claimByStateMigration(schema),
    '0010-ledger-counts': ledgerCountsMigration(schema),
  };
}
