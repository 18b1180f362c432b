import type { LiveState } from '../ledger/state-machine.js';

/**
 * Which part of the move one `execute` run does.
 *
 * - `full`: copy, rewrite the rows, delete the sources (the default).
 * - `keep-source` (`--keep-source`): copy and rewrite the rows, but leave
 *   every source in place; moved keys wait in `db_updated` for a later
 *   `--delete-only`. The application already reads the new paths, and the
 *   old objects are still there to roll back to.
 * - `delete-only` (`--delete-only`): only delete the sources of keys already
 *   in `db_updated`, each after checking its target still exists unchanged.
 */
export type ExecuteStage = 'full' | 'keep-source' | 'delete-only';

/**
 * The ledger states a stage claims. `keep-source` must not claim
 * `db_updated` rows: they are parked on purpose, and claiming them again
 * would only spin. `delete-only` claims nothing else.
 */
export function stageStates(stage: ExecuteStage | undefined): readonly LiveState[] {
  switch (stage) {
    case 'keep-source':
      return ['pending', 'copied'];
    case 'delete-only':
      return ['db_updated', 'deleting'];
    default:
      return ['pending', 'copied', 'db_updated', 'deleting'];
  }
}
