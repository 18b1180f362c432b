import { out } from './output.js';

/** The first SIGINT or SIGTERM a long command received, if any. */
export interface StopSignals {
  /** The signal that asked the command to stop, once one has. */
  readonly received: NodeJS.Signals | undefined;
  /** Removes the handlers (at the end of the command). */
  dispose(): void;
}

/**
 * How execute and revert stop on Ctrl-C: the first SIGINT or SIGTERM asks
 * them to finish what is in hand and stop (`onFirst` tells the workers;
 * the command polls `received`); a second one exits at once, with 130 for
 * SIGINT and 143 for SIGTERM, leaving unfinished keys to their leases.
 * Installed before any check, so a Ctrl-C during start-up does not kill the
 * process halfway either.
 */
export function handleStopSignals(inHand: string, resume: string, onFirst: () => void = () => undefined): StopSignals {
  let received: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (received) {
      out.info(`forced stop: leases of unfinished keys expire after --lease-seconds; ${resume}`);
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    received = sig;
    onFirst();
    out.info(`${sig}: finishing ${inHand}, then stopping (press Ctrl-C again to force)`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    get received() {
      return received;
    },
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
