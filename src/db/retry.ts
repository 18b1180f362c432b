import { setTimeout as sleep } from 'node:timers/promises';
import { isTransientDbError } from './database.js';

/**
 * Runs one ledger statement, retrying while the database is unreachable or
 * the connection was cut (failover, `pg_terminate_backend`). Every
 * transition is guarded by its expected state and lease owner, so running a
 * statement again after an unknown outcome is harmless.
 */
export async function withDbRetry<T>(fn: () => Promise<T>, attempts = 8): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransientDbError(err) || attempt >= attempts) throw err;
      await sleep(Math.min(5_000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2));
    }
  }
}
