import { withDbRetry } from '../db/retry.js';
import { oneLine } from '../errors.js';
import { commitRows, recordFailures, type LedgerContext } from '../ledger/state-machine.js';

/**
 * SQLSTATE classes of errors one row can cause: data exceptions (22: a
 * value too long for its column), integrity constraint violations (23: a
 * check, a unique key), and errors raised by an application's trigger or
 * function (P0: RAISE; 38/39: external routines). Anything else (a lost
 * connection, a missing privilege) is about the whole statement and is
 * thrown as before.
 */
const ROW_CAUSED = /^(22|23|P0|38|39)/;

/** Whether a database error may be caused by a single row of the commit. */
export function isRowCausedError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && ROW_CAUSED.test(code);
}

/** What an isolated commit did. */
export interface IsolatedCommit {
  committed: Array<{ id: number; state: 'db_updated' | 'superseded' }>;
  /** Keys whose own row made the commit fail: recorded `failed` with the reason. */
  failed: number;
}

/**
 * `commitRows` for a batch, such that a key whose commit cannot succeed
 * fails alone instead of failing its batch (and, claimed first again, every
 * later run). When the one statement fails with an error a single row can
 * cause (see {@link isRowCausedError}), the batch is split in halves and
 * each half committed on its own, recursively, down to single keys; a
 * single key that still fails is recorded `failed` at once (no retry can
 * help) with the database's reason, its source kept and its rows untouched
 * (the statement that failed changed nothing). A batch with one bad key
 * costs about 2·log2(batch) extra statements.
 */
export async function commitIsolated(ledger: LedgerContext, ids: number[], backoffSeconds: number): Promise<IsolatedCommit> {
  const result: IsolatedCommit = { committed: [], failed: 0 };
  const commit = async (part: number[]): Promise<void> => {
    if (part.length === 0) return;
    try {
      result.committed.push(...(await withDbRetry(() => commitRows(ledger, part))));
    } catch (err) {
      if (!isRowCausedError(err)) throw err;
      if (part.length === 1) {
        const error = `commit: the database refused this key's row update: ${oneLine(err)}`;
        const recorded = await withDbRetry(() => recordFailures(ledger, [{ id: part[0]!, error }], 1, backoffSeconds));
        result.failed += recorded.filter((r) => r.state === 'failed').length;
        return;
      }
      const half = Math.ceil(part.length / 2);
      await commit(part.slice(0, half));
      await commit(part.slice(half));
    }
  };
  await commit(ids);
  return result;
}
