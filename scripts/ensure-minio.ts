/**
 * Prints the paths of the MinIO server and `mc` binaries, building them into
 * the cache dir first if none is found (see `ensureMinioBinary` and
 * `ensureMcBinary`). CI runs this once up front so that parallel test files
 * do not all wait on the builds.
 */
import { ensureMinioBinary } from './lib/local-minio.js';
import { ensureMcBinary } from './lib/local-mc.js';

const log = (line: string) => process.stderr.write(`${line}\n`);
try {
  process.stdout.write(`${await ensureMinioBinary({ log })}\n`);
  process.stdout.write(`${await ensureMcBinary({ log })}\n`);
} catch (error) {
  process.stderr.write(`ensure-minio: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
