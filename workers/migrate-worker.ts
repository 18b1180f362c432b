/**
 * Piscina worker entry point for `execute`. Each task is one worker's whole
 * life (see `runWorker`): the pool runs `--threads` of them at once.
 */
import { runWorker, type WorkerResult, type WorkerTask } from '../src/execute/worker-loop.js';

export default function migrateWorker(task: WorkerTask): Promise<WorkerResult> {
  return runWorker(task);
}
