/**
 * Building a Go binary once per machine: `go install <module>` into a cache
 * directory, under a lock, so that parallel test files (and parallel CI jobs
 * sharing a cache) build it once. MinIO and `mc` are built this way.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { guardChild } from './child-reaper.js';
import { processExists } from '../../src/util/process-exists.js';

/** What to build, and where. */
export interface GoInstallConfig {
  /** `module@version`, as `go install` takes it. */
  module: string;
  /** The binary's name, and its file name in `cacheDir`. */
  binary: string;
  cacheDir: string;
  env: NodeJS.ProcessEnv;
  log: (line: string) => void;
  /** The one-line error for `reason` (no Go, a failed build): what to set instead. */
  failure: (reason: string) => string;
}

/** How to find one pinned binary (MinIO, mc, versitygw) before building it. */
export interface PinnedBinaryConfig extends Omit<GoInstallConfig, 'cacheDir' | 'log'> {
  /** The environment variable that names a binary explicitly (`MINIO_BIN`). */
  envVar: string;
  /** Also take `binary` from PATH (MinIO: any release serves; versitygw: not, the tests measure one release). */
  fromPath?: boolean;
  /** Prefix of its log lines (`s3`, `mc`). */
  logAs: string;
  log?: (line: string) => void;
}

/**
 * Returns the path of a pinned binary: the one `envVar` names (an explicit
 * choice that is wrong fails loudly, it is not replaced), else, with
 * `fromPath`, one on PATH, else the cache dir's, else one built there with
 * `go install` (under a lock, so parallel test files build it once).
 */
export async function ensurePinnedBinary(config: PinnedBinaryConfig): Promise<string> {
  const { env, envVar, binary, logAs } = config;
  const explicit = env[envVar];
  if (explicit) {
    if (await isExecutable(explicit)) return explicit;
    throw new Error(`${envVar}=${explicit} is not an executable file`);
  }
  const onPath = config.fromPath ? await findOnPath(binary, env.PATH) : undefined;
  if (onPath) return onPath;
  const log = config.log ?? (() => undefined);
  return goInstall({ ...config, cacheDir: binCacheDir(env), log: (line) => log(`${logAs}: ${line}`) });
}

/**
 * The directory Go-built server binaries are cached in (MinIO, mc,
 * versitygw): `${XDG_CACHE_HOME:-~/.cache}/bucket-migrate/bin`.
 */
export function binCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const cacheHome = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache');
  return path.join(cacheHome, 'bucket-migrate', 'bin');
}

/** Longer than any build could take: a lock this old is abandoned. */
const LOCK_STALE_MS = 30 * 60_000;
const LOCK_POLL_MS = 1_000;

/**
 * Returns `cacheDir/<binary>`, building it first unless it is there. The
 * build goes into a private GOBIN and is renamed into place, so a reader
 * never sees a half-written binary and two builders (after a stolen stale
 * lock) cannot corrupt each other's output. CGO is off: a static binary.
 */
export async function goInstall(config: GoInstallConfig): Promise<string> {
  const { module, binary, cacheDir, env, log } = config;
  const target = path.join(cacheDir, binary);
  if (await isExecutable(target)) return target;
  await fsp.mkdir(cacheDir, { recursive: true });
  return withBuildLock(path.join(cacheDir, `.${binary}-build.lock`), binary, log, async () => {
    // Whoever held the lock before us may have just built it.
    if (await isExecutable(target)) return target;
    const go = await findOnPath('go', env.PATH);
    if (!go) throw new Error(config.failure(`Go is not installed to build one (${module})`));
    const staging = await fsp.mkdtemp(path.join(cacheDir, `.${binary}-build-`));
    const buildLog = path.join(cacheDir, `${binary}-build.log`);
    log(`building ${binary} with go install ${module} (minutes the first time; log: ${buildLog})`);
    const startedAt = Date.now();
    try {
      const code = await runToFile(go, ['install', module], buildLog, { cwd: staging, env: { ...env, GOBIN: staging, CGO_ENABLED: '0' } });
      if (code !== 0) throw new Error(config.failure(`building one with go install failed (exit ${code}, see ${buildLog})`));
      await fsp.rename(path.join(staging, binary), target);
      log(`built ${target} in ${Math.round((Date.now() - startedAt) / 1000)} s`);
      return target;
    } finally {
      await fsp.rm(staging, { recursive: true, force: true });
    }
  });
}

/** The first executable `name` on `searchPath`. */
export async function findOnPath(name: string, searchPath: string | undefined): Promise<string | undefined> {
  for (const dir of (searchPath ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

export async function isExecutable(file: string): Promise<boolean> {
  try {
    const stat = await fsp.stat(file);
    if (!stat.isFile()) return false;
    await fsp.access(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function runToFile(command: string, args: string[], logFile: string, options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<number | null> {
  const fd = fs.openSync(logFile, 'w');
  try {
    const child = spawn(command, args, { ...options, stdio: ['ignore', fd, fd] });
    const guard = guardChild(child);
    return new Promise((resolve, reject) => {
      child.once('error', (error) => (guard.release(), reject(error)));
      child.once('exit', (code) => (guard.release(), resolve(code)));
    });
  } finally {
    fs.closeSync(fd);
  }
}

interface LockOwner {
  pid: number;
  host: string;
  startedAt: number;
}

/**
 * A directory lock: `mkdir` is atomic on every filesystem we care about, and
 * unlike lock files it needs no cleanup of half-written content. A lock whose
 * owner process is dead (same host) or that is older than any build could
 * take is stale and removed.
 */
async function withBuildLock<T>(lockDir: string, what: string, log: (line: string) => void, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_STALE_MS;
  let announced = false;
  for (;;) {
    if (await tryAcquire(lockDir)) break;
    if (await isStale(lockDir)) {
      log(`removing stale ${what} build lock ${lockDir}`);
      await fsp.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for the ${what} build lock ${lockDir}`);
    if (!announced) log(`waiting for another process to finish building ${what} (lock ${lockDir})`);
    announced = true;
    await sleep(LOCK_POLL_MS);
  }
  try {
    return await fn();
  } finally {
    await fsp.rm(lockDir, { recursive: true, force: true });
  }
}

async function tryAcquire(lockDir: string): Promise<boolean> {
  try {
    await fsp.mkdir(lockDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  const owner: LockOwner = { pid: process.pid, host: os.hostname(), startedAt: Date.now() };
  await fsp.writeFile(path.join(lockDir, 'owner.json'), JSON.stringify(owner));
  return true;
}

async function isStale(lockDir: string): Promise<boolean> {
  let owner: LockOwner;
  try {
    owner = JSON.parse(await fsp.readFile(path.join(lockDir, 'owner.json'), 'utf8')) as LockOwner;
  } catch {
    // The owner may be between mkdir and writing owner.json; only a lock
    // that stays ownerless for a while is abandoned.
    const stat = await fsp.stat(lockDir).catch(() => undefined);
    return stat !== undefined && Date.now() - stat.mtimeMs > 60_000;
  }
  if (Date.now() - owner.startedAt > LOCK_STALE_MS) return true;
  return owner.host === os.hostname() && !processExists(owner.pid);
}
