/**
 * Prints the paths of the S3 server binaries the tests start (MinIO, `mc`,
 * versitygw), building each into the cache dir first if it is not there (see
 * `ensureMinioBinary`, `ensureMcBinary`, `ensureVersitygwBinary`). CI runs
 * this once up front so that parallel test files do not all wait on the
 * builds, and so that the build time shows up as its own step.
 */
import { ensureMinioBinary } from './lib/local-minio.js';
import { ensureMcBinary } from './lib/local-mc.js';
import { ensureVersitygwBinary } from './lib/local-versitygw.js';

const log = (line: string) => process.stderr.write(`${line}\n`);
try {
  process.stdout.write(`${await ensureMinioBinary({ log })}\n`);
  process.stdout.write(`${await ensureMcBinary({ log })}\n`);
  process.stdout.write(`${await ensureVersitygwBinary({ log })}\n`);
} catch (error) {
  process.stderr.write(`ensure-servers: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
