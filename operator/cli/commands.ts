import { Command } from 'commander';
import { version } from '../../package.json';
import { register as registerData } from './data';
import { register as registerTrain } from './train';
import { register as registerAggregator } from './aggregator';
import { register as registerSimulate } from './simulate';
import { register as registerTrainer } from './trainer';
import { register as registerOperator } from './operator';

/**
 * registerCommands adds every `flotilla` subcommand to the program. Each subcommand lives in
 * a file of its own under `operator/cli/` and exports a `register(program)` function.
 */
export function registerCommands(program: Command): void {
  program.version(version);
  registerData(program);
  registerTrain(program);
  registerSimulate(program);
  registerAggregator(program);
  registerTrainer(program);
  registerOperator(program);
}
