/**
 * The bench's child processes: the CLI (optionally inside the wrapper that
 * reports peak RSS and CPU time) and the ceiling script, all run from a
 * private copy of the build.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/scripts/bench → the repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** How a child process ended. */
export interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** What the measuring wrapper (measure.ts) reports of the CLI it ran. */
export interface ChildUsage {
  maxRssKiB: number;
  userCpuSeconds: number;
  systemCpuSeconds: number;
}

const SERVICE_SETTING = /^(DATABASE_URL$|S3_ENDPOINT$|AWS_|SOURCE_|TARGET_|MIGRATE_|LEDGER_SCHEMA$)/;

/** This process's environment without any service setting: children get only the bench's own. */
export function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !SERVICE_SETTING.test(name)));
}

/** Throws, with the child's output, unless it exited 0. */
export function mustSucceed(what: string, result: ChildResult): void {
  if (result.code !== 0) {
    throw new Error(`${what} exited with ${result.code}\n--- stdout ---\n${result.stdout.slice(-4000)}\n--- stderr ---\n${result.stderr.slice(-4000)}`);
  }
}

/**
 * Runs the bench's children from a snapshot of dist/ (and package.json,
 * with node_modules linked) in a temp dir: a rebuild of the working tree
 * while the benchmark runs (a test run, an editor) then cannot hand a child
 * half-written modules, and every run measures the same code. Children also
 * start in that dir, so a .env in the working tree cannot change their
 * settings.
 */
export class ChildRunner {
  readonly build: string;
  private current: ChildProcess | undefined;

  private constructor(build: string) {
    this.build = build;
  }

  /** Copies the current build; fails in one line when there is none. */
  static fromSnapshot(): ChildRunner {
    const cli = path.join(ROOT, 'dist', 'src', 'cli.js');
    if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: run npm run build first (npm run bench does)`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bm-bench-build-'));
    fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
    return new ChildRunner(dir);
  }

  /** A script of the snapshot, by its path under dist/. */
  script(...parts: string[]): string {
    return path.join(this.build, 'dist', ...parts);
  }

  /** Runs `node [nodeArgs] script args` to its end (SIGKILL after `timeoutMs`). */
  runNode(script: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60 * 60_000, nodeArgs: string[] = []): Promise<ChildResult> {
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const child = spawn(process.execPath, [...nodeArgs, script, ...args], { env, cwd: this.build, stdio: ['ignore', 'pipe', 'pipe'] });
      this.current = child;
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        this.current = undefined;
        resolve({ code, stdout, stderr, seconds: (performance.now() - started) / 1000 });
      });
    });
  }

  /** Runs the CLI; with `measure`, inside the wrapper that reports peak RSS and CPU time. */
  async runCli(args: string[], env: NodeJS.ProcessEnv, measure = false, nodeArgs: string[] = []): Promise<ChildResult & { usage?: ChildUsage }> {
    if (!measure) return this.runNode(this.script('src', 'cli.js'), args, env);
    const file = path.join(os.tmpdir(), `bm-bench-usage-${process.pid}-${randomBytes(4).toString('hex')}.json`);
    try {
      const result = await this.runNode(this.script('scripts', 'bench', 'measure.js'), args, { ...env, BENCH_USAGE_FILE: file }, undefined, nodeArgs);
      const usage = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as ChildUsage) : undefined;
      return { ...result, usage };
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  /** Kills the child that is running now, if any (Ctrl-C). */
  killCurrent(): void {
    this.current?.kill('SIGKILL');
  }

  /** Removes the snapshot. */
  dispose(): void {
    fs.rmSync(this.build, { recursive: true, force: true });
  }
}
