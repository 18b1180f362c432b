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
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { guardChild } from './child-reaper.js';
import { ensurePinnedBinary } from './go-install.js';

/** `go list -m -json github.com/minio/mc@latest`, pinned. */
export const MC_MODULE = 'github.com/minio/mc@v0.0.0-20250313080218-cf909e1063a9';

export interface McOptions {
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

/** The path of an `mc` binary, building one if needed (under a lock, so parallel test files build it once). */
export async function ensureMcBinary(opts: McOptions = {}): Promise<string> {
  const failure = (reason: string) => `no mc binary and ${reason}; set MC_BIN to an mc binary`;
  return ensurePinnedBinary({ envVar: 'MC_BIN', module: MC_MODULE, binary: 'mc', env: opts.env ?? process.env, log: opts.log, logAs: 'mc', failure });
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
