/**
 * The application, for tests that run it beside the tool: a writer of rows
 * naming keys, and a one-off check of every row against the buckets.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { query } from '../helpers/db.js';
import { listKeys, type TestEnv } from '../helpers/services.js';

/** Every row under either prefix names an existing object (checked once, now). */
export async function brokenRows(env: TestEnv): Promise<string[]> {
  const rows = await query<{ id: number; path: string }>(env.databaseUrl, `select id, path from avatars where path like 'image/%' or path like 'avatar/%'`);
  const source = new Set(await listKeys(env.s3client, env.sourceBucket, 'image/'));
  const target = new Set(await listKeys(env.s3client, env.targetBucket, 'avatar/'));
  return rows.filter((r) => !(r.path.startsWith('image/') ? source : target).has(r.path)).map((r) => `${r.id}:${r.path}`);
}

export interface WriterOptions {
  /** The first key number it names (`<prefix>avatar-<firstKey>.png` on): default 1. */
  firstKey?: number;
  /** Rows it may update: those with a greater id (default 0: any). */
  updateIdsAbove?: number;
}

/**
 * The application: short transactions that insert rows naming `prefix`
 * keys and update random rows to name them, until stopped. Its own
 * connection, without the tool's session setting.
 */
export function startWriter(url: string, keys: number, prefix: string, seed: number, options: WriterOptions = {}) {
  const { firstKey = 1, updateIdsAbove = 0 } = options;
  let stopped = false;
  let writes = 0;
  let state = seed;
  const random = (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state % n;
  };
  const client = new pg.Client({ connectionString: url, application_name: 'application' });
  client.on('error', () => undefined);
  const done = (async () => {
    await client.connect();
    while (!stopped) {
      const key = `${prefix}avatar-${firstKey + random(keys)}.png`;
      if (random(2) === 0) await client.query('insert into avatars (path) values ($1)', [key]);
      else await client.query('update avatars set path = $1 where id = (select id from avatars where id > $2 order by random() limit 1)', [key, updateIdsAbove]);
      writes += 1;
      await sleep(2);
    }
    await client.end();
  })();
  return {
    get writes() {
      return writes;
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

