import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './free-port.js';
import { ensurePinnedBinary } from './go-install.js';
import { startVersitygw } from './local-versitygw.js';
import { answers200, firstStart, logTail, randomRootCredentials, spawnServer, type RunningServer } from './server-process.js';

/** Where the S3 server in use came from. */
export type S3Kind = 'configured' | TestS3Server;

/** The S3 servers the tests can start themselves, chosen by `TEST_S3_SERVER`. */
export type TestS3Server = 'minio' | 'versitygw';

const TEST_S3_SERVERS: readonly TestS3Server[] = ['minio', 'versitygw'];

/** An S3-compatible server to run against, with the credentials to use it. */
export interface LocalS3 {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  kind: S3Kind;
  /** Temp dir holding the server's storage (`data/`) and its log. */
  dataDir?: string;
  /** The running server process; a new one after `restart()`. */
  process?: ChildProcess;
  /** Stops the server if we started it and deletes its data; a no-op otherwise. */
  stop(): Promise<void>;
  /** Freezes the server (SIGSTOP): requests hang instead of failing, like a stalled network. */
  pause?(): void;
  /** Undoes {@link LocalS3.pause}. */
  resume?(): void;
  /** Stops and starts the server on the same port and data dir; objects survive. */
  restart?(): Promise<void>;
}

/** Options for {@link startS3} and {@link ensureMinioBinary}. */
export interface StartS3Options {
  /** Environment to read `S3_ENDPOINT`, `AWS_*`, `TEST_S3_SERVER`, `MINIO_BIN`, `VERSITYGW_BIN`, `PATH`, `XDG_CACHE_HOME`, `HOME` from. */
  env?: NodeJS.ProcessEnv;
  /** Receives one human-readable line per decision or failure. */
  log?: (line: string) => void;
}

/**
 * The MinIO release we build when none is installed. The Go proxy answers 403
 * to the raw commit form (`@7aac2a2c5b7c…`), so this is its pseudo-version.
 */
export const MINIO_MODULE = 'github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c';

const HEALTH_TIMEOUT_MS = 30_000;
const DEFAULT_REGION = 'us-east-1';

/**
 * Finds or starts an S3 server: `S3_ENDPOINT` with `AWS_ACCESS_KEY_ID` /
 * `AWS_SECRET_ACCESS_KEY` if set (kind `configured`), otherwise a private
 * server on a free loopback port with a fresh temp data dir and random root
 * credentials, built first if necessary: MinIO (kind `minio`, see
 * {@link ensureMinioBinary}) unless `TEST_S3_SERVER=versitygw` asks for
 * versitygw (see `startVersitygw`).
 */
export async function startS3(opts: StartS3Options = {}): Promise<LocalS3> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => undefined);
  if (env.S3_ENDPOINT) {
    log(`s3: using S3_ENDPOINT ${env.S3_ENDPOINT}`);
    return configuredS3(env);
  }
  if (testS3Server(env) === 'versitygw') return startVersitygw(opts);
  const binary = await ensureMinioBinary(opts);
  return startMinio(binary, log);
}

/** The server `TEST_S3_SERVER` names (default `minio`); anything else is refused in one line. */
export function testS3Server(env: NodeJS.ProcessEnv = process.env): TestS3Server {
  const name = (env.TEST_S3_SERVER ?? '').trim().toLowerCase() || 'minio';
  if ((TEST_S3_SERVERS as readonly string[]).includes(name)) return name as TestS3Server;
  throw new Error(`TEST_S3_SERVER=${env.TEST_S3_SERVER} is not a server the tests can start; use ${TEST_S3_SERVERS.join(' or ')}`);
}

function configuredS3(env: NodeJS.ProcessEnv): LocalS3 {
  const { S3_ENDPOINT: endpoint, AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey } = env;
  if (!endpoint || !accessKeyId || !secretAccessKey) {
    throw new Error('S3_ENDPOINT is set, so AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set too');
  }
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || DEFAULT_REGION,
    kind: 'configured',
    stop: async () => undefined,
  };
}

// ---------------------------------------------------------------------------
// Finding or building the binary

/**
 * Returns the path of a MinIO binary: `MINIO_BIN`, else `minio` on `PATH`,
 * else the cache dir's, else one built there with `go install` (under a lock,
 * so parallel test files build it once). Throws a one-line error naming
 * `S3_ENDPOINT` and `MINIO_BIN` when there is no binary and none can be built.
 */
export async function ensureMinioBinary(opts: StartS3Options = {}): Promise<string> {
  return ensurePinnedBinary({ envVar: 'MINIO_BIN', module: MINIO_MODULE, binary: 'minio', fromPath: true, env: opts.env ?? process.env, log: opts.log, logAs: 's3', failure: noMinioMessage });
}

function noMinioMessage(reason: string): string {
  return (
    `no MinIO binary and ${reason}; set S3_ENDPOINT (with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) ` +
    `to use an existing S3-compatible server, or MINIO_BIN to a minio server binary`
  );
}

// ---------------------------------------------------------------------------
// Running MinIO

interface MinioLayout {
  binary: string;
  dataDir: string;
  storageDir: string;
  logFile: string;
  port: number;
  consolePort: number;
  accessKeyId: string;
  secretAccessKey: string;
}

async function startMinio(binary: string, log: (line: string) => void): Promise<LocalS3> {
  const dataDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bm-minio-'));
  const layout: MinioLayout = {
    binary,
    dataDir,
    storageDir: path.join(dataDir, 'data'),
    logFile: path.join(dataDir, 'minio.log'),
    port: await freePort(),
    consolePort: await freePort(),
    ...randomRootCredentials(),
  };
  return firstStart('minio', DEFAULT_REGION, layout, launchMinio, log);
}


async function launchMinio(layout: MinioLayout): Promise<RunningServer> {
  await fsp.mkdir(layout.storageDir, { recursive: true });
  return spawnServer(
    layout.binary,
    [
      'server', layout.storageDir,
      '--address', `127.0.0.1:${layout.port}`,
      '--console-address', `127.0.0.1:${layout.consolePort}`,
    ],
    minioEnv(layout),
    layout,
    (child) => waitHealthy(layout, child),
  );
}

/** Only what MinIO needs: inherited MINIO_* variables would change its behaviour. */
function minioEnv(layout: MinioLayout): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    MINIO_ROOT_USER: layout.accessKeyId,
    MINIO_ROOT_PASSWORD: layout.secretAccessKey,
    MINIO_BROWSER: 'off',
  };
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ']) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

async function waitHealthy(layout: MinioLayout, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let exit: string | undefined;
  child.once('exit', (code, signal) => (exit = `exited with ${signal ?? `code ${code}`}`));
  child.once('error', (error) => (exit = `failed to spawn: ${error.message}`));
  while (Date.now() < deadline) {
    if (exit !== undefined) break;
    if (await answers200(layout.port, '/minio/health/live')) return;
    await sleep(100);
  }
  const why = exit ?? `not healthy after ${HEALTH_TIMEOUT_MS / 1000} s`;
  throw new Error(`MinIO (${layout.binary}) ${why}\n--- ${layout.logFile} ---\n${await logTail(layout.logFile)}`);
}


/** SIGTERM, then SIGKILL after a grace period; a paused child gets SIGCONT so it can see the SIGTERM. */

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
