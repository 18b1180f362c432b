/**
 * Watches the one invariant that matters while a migration runs: every table
 * row names an object that exists. It polls every ~75 ms, on its own
 * connections (never through a fault proxy), and records each violation.
 *
 * One poll is ordered so that a legal move can never look like a violation:
 *   1. list the source prefix;
 *   2. read every row's path;
 *   3. list the target prefix.
 * A row still naming a source key at (2) named it during (1) too (rows only
 * ever move off the source), and its source object may be deleted only after
 * the row moved, so it must be in listing (1). A row naming a target key at
 * (2) was updated after its copy existed, and `execute` never deletes a
 * target object, so it must be in listing (3). `revert` does delete target
 * objects (its copies, once the rows are back on the source): while a revert
 * runs, observe it with the roles swapped (`sourceBucket`/`sourcePrefix` =
 * the target, where rows move off), and the same argument holds. Rows naming
 * keys outside both prefixes (or NULL) are not the tool's business and are
 * ignored.
 *
 * A poll that fails (MinIO paused or restarting, the observer's connection
 * terminated) is counted as an error and skipped; it proves nothing either
 * way. `stop()` returns after a last, complete poll.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';

export interface InvariantObserverOptions {
  databaseUrl: string;
  s3client: S3Client;
  sourceBucket: string;
  targetBucket: string;
  sourcePrefix?: string;
  targetPrefix?: string;
  /** Table and columns (defaults: avatars, id, path). Trusted test input. */
  table?: string;
  idColumn?: string;
  pathColumn?: string;
  intervalMs?: number;
  /**
   * A tap test (or anything with `teardown`): the observer is halted when it
   * ends, so a test that fails before `stop()` does not leave it polling
   * (which would keep the test process alive until tap's timeout).
   */
  owner?: { teardown(fn: () => unknown): void };
}

export interface Violation {
  at: string;
  rowId: string;
  path: string;
  bucket: string;
}

export interface InvariantObserver {
  /** Every row seen naming a missing object (the first 100). */
  readonly violations: Violation[];
  /** Complete polls. */
  readonly checks: number;
  /** Polls that could not complete (a service was down). */
  readonly errors: number;
  /** Stops polling after one final complete poll (retried for up to 10 s). Idempotent. */
  stop(): Promise<void>;
  /** Stops polling at once, without a final poll. Idempotent. */
  halt(): Promise<void>;
}

export function startInvariantObserver(options: InvariantObserverOptions): InvariantObserver {
  const sourcePrefix = options.sourcePrefix ?? 'image/';
  const targetPrefix = options.targetPrefix ?? 'avatar/';
  const table = options.table ?? 'avatars';
  const idColumn = options.idColumn ?? 'id';
  const pathColumn = options.pathColumn ?? 'path';
  const interval = options.intervalMs ?? 75;
  const violations: Violation[] = [];
  let checks = 0;
  let errors = 0;
  let stopped = false;
  let client: pg.Client | undefined;

  const connection = async (): Promise<pg.Client> => {
    if (client) return client;
    const c = new pg.Client({ connectionString: options.databaseUrl, application_name: 'invariant-observer' });
    // A terminated backend emits 'error' on an idle client; without a
    // listener it would crash the test process.
    c.on('error', () => {
      if (client === c) client = undefined;
    });
    await c.connect();
    client = c;
    return c;
  };

  const poll = async (): Promise<void> => {
    const source = await listAll(options.s3client, options.sourceBucket, sourcePrefix);
    let rows: Array<{ id: string; path: string }>;
    try {
      const c = await connection();
      const q = `select ${quote(idColumn)}::text as id, ${quote(pathColumn)} as path from ${table
        .split('.')
        .map(quote)
        .join('.')} where ${quote(pathColumn)} is not null`;
      rows = (await c.query<{ id: string; path: string }>(q)).rows;
    } catch (err) {
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
      throw err;
    }
    const target = await listAll(options.s3client, options.targetBucket, targetPrefix);
    const at = new Date().toISOString();
    for (const row of rows) {
      let bucket: string | undefined;
      let ok = true;
      if (row.path.startsWith(sourcePrefix)) {
        bucket = options.sourceBucket;
        ok = source.has(row.path);
      } else if (row.path.startsWith(targetPrefix)) {
        bucket = options.targetBucket;
        ok = target.has(row.path);
      }
      if (!ok && bucket && violations.length < 100) violations.push({ at, rowId: row.id, path: row.path, bucket });
    }
    checks += 1;
  };

  const loop = (async () => {
    while (!stopped) {
      const started = Date.now();
      try {
        await poll();
      } catch {
        errors += 1;
      }
      const wait = Math.max(10, interval - (Date.now() - started));
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  })();

  let stopping: Promise<void> | undefined;
  const halt = async () => {
    stopped = true;
    await loop;
    const c = client;
    client = undefined;
    await c?.end().catch(() => undefined);
  };
  options.owner?.teardown(() => halt());

  return {
    violations,
    get checks() {
      return checks;
    },
    get errors() {
      return errors;
    },
    halt,
    stop() {
      stopping ??= (async () => {
        stopped = true;
        await loop;
        const deadline = Date.now() + 10_000;
        try {
          for (;;) {
            try {
              await poll();
              break;
            } catch (err) {
              if (Date.now() > deadline) throw err;
              await new Promise((resolve) => setTimeout(resolve, 200));
            }
          }
        } finally {
          await halt();
        }
      })();
      return stopping;
    },
  };
}

async function listAll(s3: S3Client, bucket: string, prefix: string): Promise<Set<string>> {
  const keys = new Set<string>();
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      { abortSignal: AbortSignal.timeout(5_000) },
    );
    for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.add(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
