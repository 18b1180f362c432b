/**
 * Secrets never leave the process: every command, in success and failure
 * paths, with --json and without, runs with a distinctive database password
 * and a distinctive S3 secret key, and neither appears in stdout, stderr,
 * the ledger or the runs table. The .env.example holds no real secret, and
 * .env is git-ignored.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { runCli } from './helpers/cli.js';
import { setupTestEnv } from './helpers/services.js';
import { query } from './support/end-state.js';

// Local Postgres trusts loopback, so any password is accepted and ignored:
// the password travels everywhere the tool would carry it.
const DB_PASSWORD = 'pw-Zq7xK2vN9tR4';
/** A password that needs URL-encoding, to catch leaks of the encoded form. */
const DB_PASSWORD_ODD = 'p@ss/w:rd Zq7x#K2';
const WRONG_SECRET = 'sk-Wq8yL3mB6pT1-distinctive-secret';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function withPassword(url: string, password: string): string {
  const parsed = new URL(url);
  parsed.password = password;
  return parsed.toString();
}

t.test('no command prints or stores a secret', async (t) => {
  const env = await setupTestEnv(t);
  // The real secret key of this MinIO: random, so any appearance is a leak.
  const s3Secret = env.s3.secretAccessKey;
  const secrets = [DB_PASSWORD, DB_PASSWORD_ODD, encodeURIComponent(DB_PASSWORD_ODD), s3Secret, WRONG_SECRET];
  const good = { ...env.env, DATABASE_URL: withPassword(env.databaseUrl, DB_PASSWORD) };
  const odd = { ...env.env, DATABASE_URL: withPassword(env.databaseUrl, DB_PASSWORD_ODD) };
  const wrongS3 = { ...good, AWS_SECRET_ACCESS_KEY: WRONG_SECRET };
  const debug = { BUCKET_MIGRATE_DEBUG: '1' };

  const runs: Array<[string, string[], NodeJS.ProcessEnv, 'ok' | 'fail' | 'any']> = [
    ['seed', ['seed', '--count', '30'], good, 'ok'],
    ['migrate', ['migrate'], good, 'ok'],
    ['plan', ['plan'], good, 'ok'],
    ['plan --json', ['plan', '--json'], odd, 'ok'],
    ['plan --list --json', ['plan', '--list', '--json'], good, 'ok'],
    ['report', ['report'], good, 'ok'],
    ['report --json', ['report', '--json'], odd, 'ok'],
    ['execute (wrong S3 secret)', ['execute'], wrongS3, 'fail'],
    ['plan --list (wrong S3 secret)', ['plan', '--list', '--json'], wrongS3, 'fail'],
    ['execute --limit', ['execute', '--limit', '10', '--threads', '1'], good, 'ok'],
    ['execute', ['execute', '--threads', '2', '--progress-interval', '1'], odd, 'ok'],
    ['validate', ['validate'], good, 'any'],
    ['validate --json', ['validate', '--json'], odd, 'any'],
    ['execute (unreachable db)', ['execute'], { ...good, DATABASE_URL: `postgres://postgres:${DB_PASSWORD}@127.0.0.1:1/nope` }, 'fail'],
    ['plan --json (unreachable db)', ['plan', '--json'], { ...good, DATABASE_URL: `postgres://postgres:${encodeURIComponent(DB_PASSWORD_ODD)}@127.0.0.1:1/nope` }, 'fail'],
    ['plan (missing database)', ['plan'], { ...good, DATABASE_URL: withPassword(env.databaseUrl.replace(env.dbName, 'no_such_db'), DB_PASSWORD) }, 'fail'],
    ['plan (wrong scheme)', ['plan'], { ...good, DATABASE_URL: `mysql://root:${DB_PASSWORD}@127.0.0.1/db` }, 'fail'],
    ['plan (unparseable url)', ['plan'], { ...good, DATABASE_URL: `postgres://root:${DB_PASSWORD}@[nope/db` }, 'fail'],
    ['execute (flag database url)', ['execute', '--database-url', `postgres://postgres:${DB_PASSWORD}@127.0.0.1:1/x`], good, 'fail'],
    ['execute (bad flag)', ['execute', '--threads', '0'], good, 'fail'],
    ['execute (other config)', ['execute', '--target-prefix', 'other/'], good, 'fail'],
    ['plan (missing table, debug)', ['plan', '--table', 'nope'], { ...good, ...debug }, 'fail'],
    ['execute (unreachable S3, debug)', ['execute'], { ...good, ...debug, S3_ENDPOINT: 'http://127.0.0.1:1' }, 'fail'],
    ['report (unreachable db, debug)', ['report', '--json'], { ...good, ...debug, DATABASE_URL: `postgres://u:${DB_PASSWORD}@127.0.0.1:1/x` }, 'fail'],
    ['validate (wrong S3 secret)', ['validate', '--json'], wrongS3, 'fail'],
  ];
  for (const [what, args, runEnv, expect] of runs) {
    const result = await runCli(args, { env: runEnv, timeoutMs: 90_000 });
    if (expect === 'ok') t.equal(result.code, 0, `${what} succeeds\n${result.stderr}`);
    if (expect === 'fail') t.not(result.code, 0, `${what} fails`);
    const output = result.stdout + result.stderr;
    const leaked = secrets.filter((s) => output.includes(s));
    t.same(leaked, [], `${what}: no secret in its output (exit ${result.code})`);
  }

  // Everything the tool stored, as text.
  const tables = await query<{ table_name: string }>(
    env.databaseUrl,
    `select table_name from information_schema.tables where table_schema = 'bucket_migrate'`,
  );
  t.ok(tables.length >= 3, `the ledger schema holds ${tables.map((r) => r.table_name).join(', ')}`);
  let stored = '';
  for (const { table_name } of tables) {
    const rows = await query<{ r: string }>(env.databaseUrl, `select row_to_json(x)::text as r from bucket_migrate."${table_name}" as x`);
    stored += rows.map((r) => r.r).join('\n');
  }
  t.ok(stored.includes('"command"'), 'the runs table was read');
  t.same(secrets.filter((s) => stored.includes(s)), [], 'no secret in the ledger or the runs table');
  t.match(stored, /postgres:\/\/postgres:\*\*\*@/, 'the database URL is stored redacted');
});

t.test('.env.example holds no real secret and .env is ignored', async (t) => {
  const example = readFileSync(`${ROOT}.env.example`, 'utf8');
  for (const line of example.split('\n')) {
    const m = /^\s*([A-Z_]+)=(.*)$/.exec(line);
    if (!m) continue;
    const [, name, value] = m;
    if (/SECRET|PASSWORD|TOKEN/.test(name!)) t.equal(value, '', `${name} is empty`);
    if (name === 'DATABASE_URL') t.match(value, /:CHANGE_ME@/, 'DATABASE_URL has a placeholder password');
  }
  const ignored = execFileSync('git', ['check-ignore', '-v', '.env'], { cwd: ROOT, encoding: 'utf8' });
  t.match(ignored, /\.gitignore:\d+:\.env\s+\.env/, '.env is git-ignored');
  const tracked = execFileSync('git', ['ls-files', '.env'], { cwd: ROOT, encoding: 'utf8' });
  t.equal(tracked.trim(), '', '.env is not tracked');
});
