/**
 * Whether a process with this pid exists on this host (`kill(pid, 0)`).
 * EPERM means it exists but belongs to another user. Pids are reused, so
 * "exists" is a hint, never proof that a given program is still running.
 */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
