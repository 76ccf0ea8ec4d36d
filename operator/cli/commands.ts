import { Command } from 'commander';
import { version } from '../../package.json';
import { register as registerData } from './data';
import { register as registerTrain } from './train';

/**
 * registerCommands adds every `flotilla` subcommand to the program. Each subcommand lives in
 * a file of its own under `operator/cli/` and exports a `register(program)` function.
 */
export function registerCommands(program: Command): void {
  program.version(version);
  registerData(program);
  registerTrain(program);
}
