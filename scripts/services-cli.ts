/**
 * `npm run services`: starts Postgres and MinIO the way the tests do, prints
 * `export` lines for a shell, and keeps them running until Ctrl-C. The S3
 * secret is printed because the server is a throwaway on loopback.
 */
import { startS3, type LocalS3 } from './lib/local-minio.js';
import { startPostgres, type LocalPostgres } from './lib/local-postgres.js';

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Single-quoted for POSIX shells, so the lines can be pasted or eval'd as is. */
function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function exportLines(postgres: LocalPostgres, s3: LocalS3): string {
  const values: Array<[string, string]> = [
    ['DATABASE_URL', postgres.url],
    ['S3_ENDPOINT', s3.endpoint],
    ['AWS_ACCESS_KEY_ID', s3.accessKeyId],
    ['AWS_SECRET_ACCESS_KEY', s3.secretAccessKey],
    ['AWS_REGION', s3.region],
  ];
  return values.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join('');
}

async function main(): Promise<void> {
  const [postgres, s3] = await Promise.allSettled([startPostgres({ log }), startS3({ log })]);
  if (postgres.status === 'rejected' || s3.status === 'rejected') {
    if (postgres.status === 'fulfilled') await postgres.value.stop();
    if (s3.status === 'fulfilled') await s3.value.stop();
    const reason: unknown = postgres.status === 'rejected' ? postgres.reason : (s3 as PromiseRejectedResult).reason;
    throw reason;
  }
  process.stdout.write(exportLines(postgres.value, s3.value));
  log(`postgres: ${postgres.value.kind}, s3: ${s3.value.kind}; press Ctrl-C to stop`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping services`);
    void Promise.allSettled([s3.value.stop(), postgres.value.stop()]).then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', stop);
}

main().catch((error: unknown) => {
  log(`services: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
