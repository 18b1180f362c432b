/**
 * versitygw (Versity S3 Gateway) as a second, independent S3 server for the
 * tests: an S3 front end over a POSIX directory, with a code base of its own
 * (not a MinIO fork), so behaviour the tool relies on is checked on two
 * implementations.
 *
 * Found as `VERSITYGW_BIN`, else in the cache dir beside MinIO
 * (`${XDG_CACHE_HOME:-~/.cache}/bucket-migrate/bin/versitygw`), else built
 * there with `go install` at a pinned release (about 5 minutes cold).
 *
 * The posix backend keeps user metadata, tags, content headers and ETags in
 * `user.*` extended attributes of each object's file, so its data dir must be
 * on a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs since Linux 6.6).
 * The data dir is made under `VERSITYGW_DATA_PARENT` if set, else the OS temp
 * dir. versitygw itself tests the root at start-up and refuses it without
 * xattrs; that is reported in one line naming `VERSITYGW_DATA_PARENT`.
 */
import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './free-port.js';
import { ensurePinnedBinary } from './go-install.js';
import type { LocalS3, StartS3Options } from './local-minio.js';
import { answers200, firstStart, logTail, randomRootCredentials, spawnServer, type RunningServer } from './server-process.js';

/** The versitygw release the tests run against. */
export const VERSITYGW_MODULE = 'github.com/versity/versitygw/cmd/versitygw@v1.8.0';

const HEALTH_PATH = '/health';
const HEALTH_TIMEOUT_MS = 30_000;
const REGION = 'us-east-1';

/**
 * Returns the path of a versitygw binary: `VERSITYGW_BIN`, else the cache
 * dir's, else one built there with `go install` (under a lock, so parallel
 * test files build it once). `versitygw` on PATH is not used: the tests
 * measure one pinned release, and a PATH binary could be any version.
 */
export async function ensureVersitygwBinary(opts: StartS3Options = {}): Promise<string> {
  const failure = (reason: string) =>
    `no versitygw binary and ${reason}; install Go, or set VERSITYGW_BIN to a versitygw binary, or leave TEST_S3_SERVER unset to use MinIO`;
  return ensurePinnedBinary({ envVar: 'VERSITYGW_BIN', module: VERSITYGW_MODULE, binary: 'versitygw', env: opts.env ?? process.env, log: opts.log, logAs: 's3', failure });
}

interface VersitygwLayout {
  binary: string;
  /** Temp dir holding the gateway root (`data/`) and its log (`versitygw.log`). */
  dataDir: string;
  rootDir: string;
  logFile: string;
  port: number;
  accessKeyId: string;
  secretAccessKey: string;
}

/**
 * Starts a private versitygw (posix backend) on a free loopback port, with a
 * fresh data dir and random root credentials, building the binary first if
 * needed. The handle has the same shape as a MinIO one (pause, resume and
 * restart included), so every test can run against either.
 */
export async function startVersitygw(opts: StartS3Options = {}): Promise<LocalS3> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => undefined);
  const binary = await ensureVersitygwBinary(opts);
  const parent = env.VERSITYGW_DATA_PARENT || os.tmpdir();
  const dataDir = await fsp.mkdtemp(path.join(parent, 'bm-versitygw-'));
  const layout: VersitygwLayout = {
    binary,
    dataDir,
    rootDir: path.join(dataDir, 'data'),
    logFile: path.join(dataDir, 'versitygw.log'),
    port: await freePort(),
    ...randomRootCredentials(),
  };
  // The root dir is made by each launch (a restart finds it there already).
  const launchInRoot = async (l: VersitygwLayout) => {
    await fsp.mkdir(l.rootDir, { recursive: true });
    return launch(l);
  };
  return firstStart('versitygw', REGION, layout, launchInRoot, log);
}

function launchArgs(layout: VersitygwLayout): string[] {
  return [
    '--port', `127.0.0.1:${layout.port}`,
    '--health', HEALTH_PATH,
    '--region', REGION,
    // One line per request on stdout otherwise: megabytes per test file.
    '--quiet',
    'posix',
    layout.rootDir,
  ];
}

async function launch(layout: VersitygwLayout): Promise<RunningServer> {
  // Credentials through the environment, not argv, where `ps` shows them.
  const env = { PATH: process.env.PATH, HOME: layout.dataDir, ROOT_ACCESS_KEY: layout.accessKeyId, ROOT_SECRET_KEY: layout.secretAccessKey };
  return spawnServer(layout.binary, launchArgs(layout), env, layout, (child) => waitHealthy(layout, child));
}


async function waitHealthy(layout: VersitygwLayout, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let spawnError: Error | undefined;
  child.once('error', (error) => (spawnError = error));
  for (;;) {
    if (spawnError) throw new Error(`versitygw failed to start: ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = await logTail(layout.logFile);
      if (/xattrs are not supported/.test(log)) {
        throw new Error(
          `versitygw needs user extended attributes, which ${path.dirname(layout.dataDir)} does not support; ` +
            `set VERSITYGW_DATA_PARENT to a directory on ext4, xfs or btrfs`,
        );
      }
      throw new Error(`versitygw exited at start-up (${child.exitCode ?? child.signalCode}); log:\n${log}`);
    }
    if (await answers200(layout.port, HEALTH_PATH)) return;
    if (Date.now() > deadline) {
      throw new Error(`versitygw not healthy after ${HEALTH_TIMEOUT_MS} ms; log:\n${await logTail(layout.logFile)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}



