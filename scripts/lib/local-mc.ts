/**
 * The MinIO client `mc`, for MinIO's admin API (users, policies) in tests.
 *
 * Found as `MC_BIN`, else in the cache dir next to the MinIO binary
 * (`${XDG_CACHE_HOME:-~/.cache}/bucket-migrate/bin/mc`), else built there
 * with `go install` at a pinned pseudo-version (the Go module proxy refuses
 * the raw `@<commit>` form). `mc` on PATH is deliberately not used: on many
 * machines that name is Midnight Commander.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { guardChild } from './child-reaper.js';
import { minioCacheDir } from './local-minio.js';

/** `go list -m -json github.com/minio/mc@latest`, pinned. */
export const MC_MODULE = 'github.com/minio/mc@v0.0.0-20250313080218-cf909e1063a9';

const LOCK_STALE_MS = 30 * 60_000;

export interface McOptions {
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

/** The path of an `mc` binary, building one if needed (under a lock, so parallel test files build it once). */
export async function ensureMcBinary(opts: McOptions = {}): Promise<string> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => undefined);
  if (env.MC_BIN) {
    if (await isExecutable(env.MC_BIN)) return env.MC_BIN;
    throw new Error(`MC_BIN=${env.MC_BIN} is not an executable file`);
  }
  const cacheDir = minioCacheDir(env);
  const target = path.join(cacheDir, 'mc');
  if (await isExecutable(target)) return target;
  await fsp.mkdir(cacheDir, { recursive: true });
  const lock = path.join(cacheDir, '.mc-build.lock');
  const deadline = Date.now() + LOCK_STALE_MS;
  for (;;) {
    try {
      await fsp.mkdir(lock);
      await fsp.writeFile(path.join(lock, 'owner.json'), JSON.stringify({ pid: process.pid, host: os.hostname(), at: Date.now() }));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      if (await lockIsStale(lock)) {
        await fsp.rm(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for the mc build lock ${lock}`);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  }
  try {
    if (await isExecutable(target)) return target;
    return await buildMc(cacheDir, target, env, log);
  } finally {
    await fsp.rm(lock, { recursive: true, force: true });
  }
}

async function buildMc(cacheDir: string, target: string, env: NodeJS.ProcessEnv, log: (line: string) => void): Promise<string> {
  const go = await findOnPath('go', env.PATH);
  if (!go) throw new Error(`no mc binary and Go is not installed to build one (${MC_MODULE}); set MC_BIN to an mc binary`);
  const staging = await fsp.mkdtemp(path.join(cacheDir, '.mc-build-'));
  const buildLog = path.join(cacheDir, 'mc-build.log');
  log(`mc: building with go install ${MC_MODULE} (about a minute; log: ${buildLog})`);
  try {
    const code = await run(go, ['install', MC_MODULE], buildLog, { cwd: staging, env: { ...env, GOBIN: staging, CGO_ENABLED: '0' } });
    if (code !== 0) throw new Error(`building mc with go install failed (exit ${code}, see ${buildLog}); set MC_BIN to an mc binary`);
    await fsp.rename(path.join(staging, 'mc'), target);
    return target;
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}

/** An `mc` bound to one server through a private config dir and an alias. */
export interface Mc {
  alias: string;
  /** Runs `mc <args>` and returns stdout; throws with stderr on failure. */
  run(...args: string[]): Promise<string>;
  /** Removes the private config dir. */
  close(): Promise<void>;
}

/** Sets up `mc` for `endpoint` with admin credentials, in a throw-away config dir. */
export async function connectMc(
  server: { endpoint: string; accessKeyId: string; secretAccessKey: string },
  opts: McOptions = {},
): Promise<Mc> {
  const binary = await ensureMcBinary(opts);
  const configDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bm-mc-'));
  const alias = 'bm';
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: configDir, MC_CONFIG_DIR: configDir };
  const runMc = (...args: string[]) => capture(binary, ['--config-dir', configDir, '--no-color', ...args], env);
  await runMc('alias', 'set', alias, server.endpoint, server.accessKeyId, server.secretAccessKey, '--api', 'S3v4');
  return {
    alias,
    run: runMc,
    close: () => fsp.rm(configDir, { recursive: true, force: true }),
  };
}

function capture(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const guard = guardChild(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('error', (e) => (guard.release(), reject(e)));
    child.once('close', (code) => {
      guard.release();
      // The secret key is an argument of `alias set`: keep it out of messages.
      const shown = args[3] === 'alias' ? 'alias set …' : args.join(' ');
      if (code === 0) resolve(stdout);
      else reject(new Error(`mc ${shown} failed (exit ${code}): ${stderr.trim() || stdout.trim()}`));
    });
  });
}

function run(command: string, args: string[], logFile: string, options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<number | null> {
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

async function lockIsStale(lock: string): Promise<boolean> {
  try {
    const owner = JSON.parse(await fsp.readFile(path.join(lock, 'owner.json'), 'utf8')) as { pid: number; host: string; at: number };
    if (Date.now() - owner.at > LOCK_STALE_MS) return true;
    if (owner.host !== os.hostname()) return false;
    try {
      process.kill(owner.pid, 0);
      return false;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code !== 'EPERM';
    }
  } catch {
    const stat = await fsp.stat(lock).catch(() => undefined);
    return stat !== undefined && Date.now() - stat.mtimeMs > 60_000;
  }
}

async function findOnPath(name: string, searchPath: string | undefined): Promise<string | undefined> {
  for (const dir of (searchPath ?? '').split(path.delimiter)) {
    if (dir && (await isExecutable(path.join(dir, name)))) return path.join(dir, name);
  }
  return undefined;
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    const stat = await fsp.stat(file);
    if (!stat.isFile()) return false;
    await fsp.access(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
