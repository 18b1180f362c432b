/**
 * What the local S3 servers (MinIO, versitygw) share once started: the
 * running child process, how it is stopped, and the `LocalS3` handle the
 * tests, the demo and the bench hold, which can pause, resume, restart and
 * stop it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import { guardChild, type ChildGuard } from './child-reaper.js';
import type { LocalS3, TestS3Server } from './local-minio.js';

/** A server process this process started, and its reaper guard. */
export interface RunningServer {
  child: ChildProcess;
  guard: ChildGuard;
  exited: Promise<void>;
}

/** Where a started server listens and keeps its data, and its credentials. */
export interface ServerLayout {
  port: number;
  dataDir: string;
  accessKeyId: string;
  secretAccessKey: string;
}

const STOP_GRACE_MS = 5_000;

/** Fresh random root credentials for a private server (never the AWS_* of this environment). */
export function randomRootCredentials(): { accessKeyId: string; secretAccessKey: string } {
  return { accessKeyId: `bm${crypto.randomBytes(6).toString('hex')}`, secretAccessKey: crypto.randomBytes(20).toString('hex') };
}

/** Whether a GET of `path` on the loopback `port` answers 200 within a second (a health probe). */
export function answers200(port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    // agent: false so no keep-alive socket outlives the probe.
    const request = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 1_000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.once('timeout', () => request.destroy());
    request.once('error', () => resolve(false));
  });
}

/** The last `bytes` of a server's log, for the error that says why it did not start. */
export async function logTail(file: string, bytes = 4_096): Promise<string> {
  try {
    return (await fsp.readFile(file, 'utf8')).slice(-bytes);
  } catch {
    return '(no log)';
  }
}

/**
 * The first start of a private server whose data dir is `layout.dataDir`:
 * `launch` it, remove the data dir if it did not come up, log how long it
 * took, and return its handle (see {@link serverHandle}).
 */
export async function firstStart<L extends ServerLayout>(
  kind: TestS3Server,
  region: string,
  layout: L,
  launch: (layout: L) => Promise<RunningServer>,
  log: (line: string) => void,
): Promise<LocalS3> {
  const startedAt = Date.now();
  let running: RunningServer;
  try {
    running = await launch(layout);
  } catch (error) {
    await fsp.rm(layout.dataDir, { recursive: true, force: true });
    throw error;
  }
  log(`s3: ${kind === 'minio' ? 'MinIO' : kind} on 127.0.0.1:${layout.port} ready in ${Date.now() - startedAt} ms (${layout.dataDir})`);
  return serverHandle(kind, region, layout, running, launch);
}

/** SIGTERM, then SIGKILL after a grace period; a paused child gets SIGCONT so it can see the SIGTERM. */
export async function terminateServer(running: RunningServer): Promise<void> {
  const { child, guard, exited } = running;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(killer);
  }
  guard.release();
}

/**
 * The handle of a started server. `launch` starts it again on the same
 * port and data (for `restart()`); `stop()` ends it and removes its data
 * directory, once.
 */
export function serverHandle<L extends ServerLayout>(
  kind: TestS3Server,
  region: string,
  layout: L,
  first: RunningServer,
  launch: (layout: L) => Promise<RunningServer>,
): LocalS3 {
  let current: RunningServer | undefined = first;
  let stopping: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${layout.port}`,
    accessKeyId: layout.accessKeyId,
    secretAccessKey: layout.secretAccessKey,
    region,
    kind,
    dataDir: layout.dataDir,
    get process() {
      return current?.child;
    },
    pause() {
      current?.child.kill('SIGSTOP');
    },
    resume() {
      current?.child.kill('SIGCONT');
    },
    async restart() {
      if (stopping) throw new Error(`${kind} was stopped; it cannot be restarted`);
      if (current) await terminateServer(current);
      current = undefined;
      current = await launch(layout);
    },
    stop() {
      stopping ??= (async () => {
        if (current) await terminateServer(current);
        current = undefined;
        await fsp.rm(layout.dataDir, { recursive: true, force: true, maxRetries: 3 });
      })();
      return stopping;
    },
  };
}

/**
 * Starts `binary args` with its output appended to `logFile`, reaped with
 * this process (and `dataDir` removed, should this process die first), and
 * waits for `waitHealthy`; a server that does not become healthy is
 * stopped and the error rethrown.
 */
export async function spawnServer(
  binary: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  files: { logFile: string; dataDir: string },
  waitHealthy: (child: ChildProcess) => Promise<void>,
): Promise<RunningServer> {
  const fd = fs.openSync(files.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, args, { env, stdio: ['ignore', fd, fd] });
  } finally {
    fs.closeSync(fd);
  }
  // The SIGKILL'd child dies at once, so the exit hook may also delete the dir.
  const guard = guardChild(child, { dir: files.dataDir, signal: 'SIGKILL' });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    // A child that never spawned emits 'error' and may never emit 'exit'.
    child.once('error', () => child.pid === undefined && resolve());
  });
  const running: RunningServer = { child, guard, exited };
  try {
    await waitHealthy(child);
  } catch (error) {
    await terminateServer(running);
    throw error;
  }
  return running;
}
