/**
 * The one observer of the invariant that matters: every table row names an
 * object that exists. Every test that watches a migration (crash-resume,
 * the hostile-* tests, revert, ops, the adversarial test and the soak) uses
 * this one. It polls every ~75 ms on its own connections (never through a
 * fault proxy) and makes a last, complete poll on `stop()`.
 *
 * What a row names. A path is resolved to (bucket, key) as the tool reads
 * it: `image/x` (a key under the source prefix: the source bucket),
 * `avatar/x` (under the target prefix: the target bucket), the same with a
 * leading `/`, and `s3://<bucket>/<key>` or a path-style `http(s)://host/<bucket>/<key>`
 * URL naming either bucket. A row that names a key outside both locations
 * (or NULL, or another bucket) is not the tool's business and is ignored.
 *
 * One poll, and why it neither invents nor misses a violation:
 *   1. read every row: id, path, and its row version (`xmin`, `ctid`);
 *   2. list both locations (the source prefix in the source bucket, the
 *      target prefix in the target bucket);
 *   3. re-read, by primary key, the rows whose object was absent from (2).
 * A row is a violation only if (3) finds the same row version as (1). A row
 * version never changes its path (every UPDATE writes a new version with a
 * new xmin and ctid, and a deleted row is not found by (3)), so that version
 * named the path during the whole interval (1)..(3), which contains the
 * listing (2) that found the object absent: at that instant, the row named a
 * missing object. Nothing is assumed about the order in which the tool moves
 * rows or deletes objects (revert and the application move rows both ways),
 * so there is no false positive by construction, only proofs. Nor does it
 * matter which location is called the source: `revert` (which deletes
 * target objects) is observed with the roles as they are, or swapped, as
 * some tests pass them.
 *
 * In the other direction: every poll reads every row (all spellings
 * above) and lists both locations completely, so a violation that lasts
 * one poll interval (two polls apart) is always reported, whatever the
 * tool does; and the final poll of `stop()` runs after everything has
 * stopped, so a violation left behind is always reported. What a poller
 * cannot see is a violation that begins and ends between two polls (a row
 * pointed at a missing object and moved off it again within ~100 ms) or
 * one on a row whose version changes between (1) and (3) in every poll
 * (the next poll re-checks it). The adversarial test and the soak make many
 * polls over long runs, and the end state is checked once at rest.
 *
 * A poll that fails (MinIO paused or restarting, the observer's connection
 * terminated) is counted as an error and skipped; it proves nothing either
 * way. The final poll is retried for up to 10 s.
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
  /** Pause between the end of one poll and the start of the next (default 75 ms). */
  intervalMs?: number;
  /** Called once per violation as it is found (e.g. to print it at once in the soak). */
  onViolation?: (violation: Violation) => void;
  /**
   * A tap test (or anything with `teardown`): the observer is halted when it
   * ends, so a test that fails before `stop()` does not leave it polling
   * (which would keep the test process alive until tap's timeout).
   */
  owner?: { teardown(fn: () => unknown): void };
}

/** What a test environment (test/helpers/services.ts `TestEnv`) gives the observer. */
export interface ObservedEnv {
  databaseUrl: string;
  s3client: S3Client;
  sourceBucket: string;
  targetBucket: string;
}

/**
 * The observer of a test environment's table and buckets, halted when
 * `owner` ends. Forward, keys move from `image/` in the source bucket to
 * `avatar/` in the target bucket; `reverse` (a revert) swaps the two
 * locations: rows move back from the target prefix to the source prefix.
 */
export function observeTestEnv(
  owner: InvariantObserverOptions['owner'],
  env: ObservedEnv,
  options: { reverse?: boolean } & Partial<InvariantObserverOptions> = {},
): InvariantObserver {
  const { reverse, ...rest } = options;
  const locations = reverse
    ? { sourceBucket: env.targetBucket, sourcePrefix: 'avatar/', targetBucket: env.sourceBucket, targetPrefix: 'image/' }
    : { sourceBucket: env.sourceBucket, targetBucket: env.targetBucket };
  return startInvariantObserver({ owner, databaseUrl: env.databaseUrl, s3client: env.s3client, ...locations, ...rest });
}

/** A row proven to name a missing object. */
export interface Violation {
  /** When the listing that found the object missing was made (ISO 8601). */
  at: string;
  rowId: string;
  /** The row's path, as spelled in the table. */
  path: string;
  /** The object it names. */
  bucket: string;
  key: string;
}

export interface InvariantObserver {
  /**
   * The violations, the first 1,000 distinct (row id, path) pairs, each with
   * the time it was first proven.
   */
  readonly violations: Violation[];
  /** Distinct (row id, path) pairs found naming a missing object (all of them, not only the first 1,000). */
  readonly violationCount: number;
  /** Complete polls. */
  readonly checks: number;
  /** Polls that could not complete (a service was down). */
  readonly errors: number;
  /** Stops polling after one final complete poll (retried for up to 10 s). Idempotent. */
  stop(): Promise<void>;
  /** Stops polling at once, without a final poll. Idempotent. */
  halt(): Promise<void>;
}

const MAX_KEPT = 1_000;

/** A location the tool moves objects between. */
interface Location {
  bucket: string;
  prefix: string;
}

/**
 * The object a path names, if it lies in one of `locations`: bare keys are
 * resolved by prefix (source prefix: source bucket, target prefix: target
 * bucket), `s3://` and path-style http(s) URLs by the bucket they name.
 */
export function resolvePath(path: string, locations: { source: Location; target: Location }): { bucket: string; key: string } | undefined {
  const { source, target } = locations;
  const inLocation = (bucket: string, key: string) =>
    [source, target].some((l) => l.bucket === bucket && key.startsWith(l.prefix)) ? { bucket, key } : undefined;
  const url = /^(?:s3:\/\/|https?:\/\/[^/]+\/)([^/]+)\/(.*)$/s.exec(path);
  if (url) return inLocation(url[1]!, url[2]!);
  const key = path.startsWith('/') ? path.slice(1) : path;
  if (key.startsWith(source.prefix)) return { bucket: source.bucket, key };
  if (key.startsWith(target.prefix)) return { bucket: target.bucket, key };
  return undefined;
}

interface RowVersion {
  id: string;
  path: string;
  version: string;
}

export function startInvariantObserver(options: InvariantObserverOptions): InvariantObserver {
  const source: Location = { bucket: options.sourceBucket, prefix: options.sourcePrefix ?? 'image/' };
  const target: Location = { bucket: options.targetBucket, prefix: options.targetPrefix ?? 'avatar/' };
  const table = (options.table ?? 'avatars').split('.').map(quote).join('.');
  const idColumn = quote(options.idColumn ?? 'id');
  const pathColumn = quote(options.pathColumn ?? 'path');
  const interval = options.intervalMs ?? 75;
  const violations: Violation[] = [];
  const seen = new Set<string>();
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

  // Each call is one statement, so one snapshot (read committed).
  const readRows = async (ids?: string[]): Promise<RowVersion[]> => {
    try {
      const c = await connection();
      const text =
        `select ${idColumn}::text as id, ${pathColumn}::text as path, xmin::text || '/' || ctid::text as version ` +
        `from ${table} where ${pathColumn} is not null` +
        (ids ? ` and ${idColumn}::text = any($1::text[])` : '');
      return (await c.query<RowVersion>(text, ids ? [ids] : [])).rows;
    } catch (err) {
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
      throw err;
    }
  };

  const poll = async (): Promise<void> => {
    // (1) the rows, with their versions.
    const candidates = new Map<string, { row: RowVersion; bucket: string; key: string }>();
    const rows = await readRows();
    // (2) both locations, listed after the rows were read.
    const [sourceKeys, targetKeys] = await Promise.all([listAll(options.s3client, source), listAll(options.s3client, target)]);
    const at = new Date().toISOString();
    for (const row of rows) {
      const object = resolvePath(row.path, { source, target });
      if (!object) continue;
      const listed = object.bucket === source.bucket && object.key.startsWith(source.prefix) ? sourceKeys : targetKeys;
      if (!listed.has(object.key)) candidates.set(row.id, { row, ...object });
    }
    // (3) only a row version that outlived the listing is a violation.
    if (candidates.size > 0) {
      const again = await readRows([...candidates.keys()]);
      for (const row of again) {
        const before = candidates.get(row.id);
        if (!before || before.row.version !== row.version) continue;
        const id = `${row.id}\u0000${row.path}`;
        if (seen.has(id)) continue;
        seen.add(id);
        const violation: Violation = { at, rowId: row.id, path: row.path, bucket: before.bucket, key: before.key };
        if (violations.length < MAX_KEPT) violations.push(violation);
        options.onViolation?.(violation);
      }
    }
    checks += 1;
  };

  const loop = (async () => {
    while (!stopped) {
      try {
        await poll();
      } catch {
        errors += 1;
      }
      if (!stopped) await new Promise((resolve) => setTimeout(resolve, interval));
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
    get violationCount() {
      return seen.size;
    },
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

async function listAll(s3: S3Client, location: Location): Promise<Set<string>> {
  const keys = new Set<string>();
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: location.bucket, Prefix: location.prefix, ContinuationToken: token }),
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
