import type { Migration } from 'kysely';
import { ledgerMigration } from './0001-ledger.js';
import { auditViewsMigration } from './0002-audit-views.js';
import { archivedStateMigration } from './0004-archived.js';
import { revertMigration } from './0005-revert.js';
import { guardMigration } from './0006-guard.js';
import { runsLivenessRevertViewsMigration } from './0007-runs-liveness-revert-views.js';
import { claimByStateMigration } from './0008-claim-by-state.js';
import { ledgerCountsMigration } from './0009-ledger-counts.js';
import { copyMadeMigration } from './0010-copy-made.js';

/**
 * The ledger schema's migrations, in order. Names are numbered so that
 * kysely's alphabetical ordering is the intended one.
 *
 * There is no 0003, on purpose: it was written alongside 0002 and 0004 but
 * never released, so no ledger has it. The numbers are not closed up
 * because kysely records each applied migration by name in
 * `kysely_migration`: after renaming 0004 to 0003, every existing ledger
 * would hold an applied migration the list no longer has (kysely then
 * refuses to migrate it at all) and a "new" 0003 to run, the archived-state
 * change a second time. A number, once released, is never reused or
 * renamed; a gap costs nothing.
 *
 * Migrations repeat each other on purpose, and `duplicates` lists those
 * pairs (0002 ~ 0007, 0005 ~ 0006, 0006 within itself, 0006 ~ 0007): a
 * migration that changes a view, a function or a check restates it whole
 * (`create or replace view ...`), because a released migration must go on
 * doing exactly what it did when it was released. A helper shared between
 * migrations would let an edit made for a new one change what an old one
 * does on the next fresh ledger. So the text is copied, never shared.
 */
export function ledgerMigrations(schema: string): Record<string, Migration> {
  return {
    '0001-ledger': ledgerMigration(schema),
    '0002-audit-views': auditViewsMigration(schema),
    '0004-archived': archivedStateMigration(schema),
    '0005-revert': revertMigration(schema),
    '0006-guard': guardMigration(schema),
    '0007-runs-liveness-revert-views': runsLivenessRevertViewsMigration(schema),
    '0008-claim-by-state': claimByStateMigration(schema),
    '0009-ledger-counts': ledgerCountsMigration(schema),
    '0010-copy-made': copyMadeMigration(schema),
  };
}
