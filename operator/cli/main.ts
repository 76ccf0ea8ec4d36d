import { Command } from 'commander';
import { registerCommands } from './commands';

/**
 * main parses argv (as `process.argv`, node and script first) and runs one `flotilla`
 * subcommand. A rejected promise carries the message the user sees.
 */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('flotilla')
    .description('Federated learning jobs on Kubernetes, and on one machine for trying them out')
    .showHelpAfterError()
    .exitOverride();
  registerCommands(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    // commander has already printed its own message for usage errors and --help.
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') return;
    if (code?.startsWith('commander.')) process.exit((err as { exitCode?: number }).exitCode ?? 2);
    throw err;
  }
}
