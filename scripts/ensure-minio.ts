/**
 * Prints the path of a MinIO server binary, building it into the cache dir
 * first if none is found (see `ensureMinioBinary`). CI runs this once up front
 * so that parallel test files do not all wait on the build.
 */
import { ensureMinioBinary } from './lib/local-minio.js';

try {
  const binary = await ensureMinioBinary({ log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(`${binary}\n`);
} catch (error) {
  process.stderr.write(`ensure-minio: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
