import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

/**
 * Runs in a separate, detached Node process. It holds the read end of a pipe
 * whose write end only we own, so the pipe reaching EOF means we are gone,
 * however we died (SIGKILL from a test-runner timeout included, which no
 * in-process handler can catch). Receiving any byte first means "released".
 */
const WATCHDOG_SOURCE = `
const [pidArg, signal, dir] = process.argv.slice(1);
const pid = Number(pidArg);
let released = false;
const alive = () => { try { process.kill(pid, 0); return true; } catch { return false; } };
const reap = () => {
  if (released) process.exit(0);
  try { process.kill(pid, 'SIGCONT'); process.kill(pid, signal); } catch {}
  const deadline = Date.now() + 5000;
  const poll = () => {
    if (alive() && Date.now() < deadline) return setTimeout(poll, 50);
    try { process.kill(pid, 'SIGKILL'); } catch {}
    if (dir) { try { require('node:fs').rmSync(dir, { recursive: true, force: true, maxRetries: 5 }); } catch {} }
    process.exit(0);
  };
  poll();
};
process.stdin.on('data', () => { released = true; });
process.stdin.on('end', reap);
process.stdin.on('error', reap);
`;

/** Something we can signal: a spawned child, or just a pid we learned. */
export interface Signalable {
  pid?: number | undefined;
}

/** Options for {@link guardChild}. */
export interface GuardOptions {
  /** Removed once the child is dead, if we die without cleaning up. */
  dir?: string;
  /** How to ask the child to die before resorting to SIGKILL (default SIGKILL). */
  signal?: NodeJS.Signals;
}

/** Handle returned by {@link guardChild}. */
export interface ChildGuard {
  /** The child was shut down properly; stand the guard down. Idempotent. */
  release(): void;
}

interface Guarded {
  pid: number;
  signal: NodeJS.Signals;
  dir?: string;
}

const guarded = new Set<Guarded>();
let exitHookInstalled = false;

/**
 * Makes sure `child` does not outlive this process.
 *
 * Two layers: a synchronous kill on process 'exit' (covers normal exits and
 * `process.exit()`), and a detached watchdog process that notices our death
 * through a pipe closing (covers signals, crashes and SIGKILL, where no
 * JavaScript runs). The watchdog also removes `dir`, which the 'exit' hook
 * can only attempt because the child may still be shutting down.
 */
export function guardChild(child: Signalable, options: GuardOptions = {}): ChildGuard {
  const pid = child.pid;
  if (pid === undefined) return { release() {} };
  const entry: Guarded = { pid, signal: options.signal ?? 'SIGKILL', dir: options.dir };
  guarded.add(entry);
  installExitHook();
  const watchdog = spawnWatchdog(entry);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      guarded.delete(entry);
      disarmWatchdog(watchdog);
    },
  };
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', reapAllSync);
}

function reapAllSync(): void {
  for (const entry of guarded) {
    signalQuietly(entry.pid, 'SIGCONT');
    signalQuietly(entry.pid, entry.signal);
    if (entry.dir !== undefined && entry.signal === 'SIGKILL') {
      // Only safe when the child is already dead; otherwise the watchdog,
      // which can wait, removes the directory.
      removeQuietly(entry.dir);
    }
  }
  guarded.clear();
}

function spawnWatchdog(entry: Guarded): ChildProcess | undefined {
  try {
    const watchdog = spawn(process.execPath, ['-e', WATCHDOG_SOURCE, String(entry.pid), entry.signal, entry.dir ?? ''], {
      // Detached: a Ctrl-C to our process group must not kill the watchdog
      // before it has done its job.
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
      // Not our env: NODE_OPTIONS from test runners and coverage tools would
      // load their hooks into the watchdog and make them track it.
      env: { PATH: process.env.PATH ?? '' },
    });
    watchdog.on('error', () => undefined);
    watchdog.stdin?.on('error', () => undefined);
    // Neither the watchdog nor its pipe may keep our event loop alive.
    watchdog.unref();
    (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    return watchdog;
  } catch {
    // The in-process 'exit' hook still covers ordinary exits.
    return undefined;
  }
}

function disarmWatchdog(watchdog: ChildProcess | undefined): void {
  const stdin = watchdog?.stdin;
  if (!stdin || stdin.destroyed) return;
  stdin.end('released');
}

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

function removeQuietly(dir: string): void {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch {
    // Best effort at exit; the watchdog retries.
  }
}
