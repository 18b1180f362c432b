import { Command } from 'commander';
import { FatalError } from '../errors.js';
import { withConfigOptions } from './options.js';

/** A command whose issue has not landed yet: says so and exits 1. */
export function notImplementedCommand(name: string, summary: string): Command {
  return withConfigOptions(new Command(name).summary(summary).description(`${summary} (not implemented yet)`)).action(() => {
    throw new FatalError(`${name} is not implemented yet`);
  });
}
