import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * The compiled CLI. Compiled, this file is dist/test/helpers/cli.js and the CLI
 * dist/src/cli.js; loaded from source by a TypeScript loader, it sits in
 * test/helpers/ and the CLI is still the compiled one.
 */
export const CLI_PATH = fileURLToPath(
  new URL(import.meta.url.endsWith('.ts') ? '../../dist/src/cli.js' : '../../src/cli.js', import.meta.url),
);

const DEFAULT_TIMEOUT_MS = 60_000;

/** How a CLI run ended and everything it printed. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options for {@link runCli} and {@link spawnCli}. */
export interface CliOptions {
  /** The whole environment of the child (typically `TestEnv.env` plus overrides); not merged with ours. */
  env: NodeJS.ProcessEnv;
  /** Kill the CLI (SIGKILL) and reject after this long (default 60 s). */
  timeoutMs?: number;
  /** Written to stdin, which is then closed. Without it stdin is closed at once, so a prompt sees EOF instead of hanging. */
  input?: string;
  cwd?: string;
}

/** A running CLI: the process (to signal it) and its eventual result. */
export interface SpawnedCli {
  child: ChildProcess;
  result: Promise<CliResult>;
}

/**
 * Runs the compiled CLI with `args` to completion. A non-zero exit is a
 * result, not an error; only a timeout or a failure to spawn rejects.
 */
export function runCli(args: string[], opts: CliOptions): Promise<CliResult> {
  return spawnCli(args, opts).result;
}

/**
 * Starts the compiled CLI and returns at once, for tests that need to signal
 * it mid-run (e.g. SIGKILL during a copy, then resume).
 */
export function spawnCli(args: string[], opts: CliOptions): SpawnedCli {
  const child = spawn(process.execPath, [CLI_PATH, ...args], {
    cwd: opts.cwd,
    // Pipes (not a TTY) give the CLI the same non-interactive view CI has.
    env: childEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const result = collectResult(child, args, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  // A CLI that exits before reading its input makes the write fail with EPIPE.
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(opts.input ?? '');
  return { child, result };
}

function childEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  // tap may export FORCE_COLOR; next to NO_COLOR it makes Node print a warning
  // on the CLI's stderr, which tests assert on.
  const { FORCE_COLOR: _ignored, ...rest } = env;
  return { ...rest, NO_COLOR: '1' };
}

function collectResult(child: ChildProcess, args: string[], timeoutMs: number): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    // 'close', not 'exit': it fires after stdout/stderr are fully read.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(new Error(`bucket-migrate ${args.join(' ')} timed out after ${timeoutMs} ms\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`));
        return;
      }
      resolve({ code, signal, stdout, stderr });
    });
  });
}
