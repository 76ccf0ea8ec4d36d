import { Command } from 'commander';
import { loadManifest } from '../../federation/job/manifest';
import { createLogger } from '../../federation/log';
import { readTlsDir } from '../../federation/protocol/identity';
import { ExecutionProvider } from '../../federation/engine/session';
import { runTrainer } from '../../trainer-image/trainer';

interface TrainerFlags {
  job: string;
  site: string;
  aggregator: string;
  data?: string;
  tlsDir?: string;
  serverName?: string;
  insecureDev?: boolean;
  provider: string;
  threads?: string;
}

/** register adds `flotilla trainer`. */
export function register(program: Command): void {
  program
    .command('trainer')
    .description('Train for one site of a FederatedJob: join, train each round, push updates')
    .requiredOption('--job <manifest>', 'FederatedJob manifest (YAML or JSON)')
    .requiredOption(
      '--site <name>',
      'this site, as named in spec.sites (must match its certificate)',
    )
    .requiredOption('--aggregator <host:port>', 'address of the aggregator')
    .option('--data <dir>', "the site's dataset directory (default: the site's spec.sites[].data)")
    .option('--tls-dir <dir>', "ca.crt, tls.crt and tls.key of this site's certificate")
    .option('--server-name <name>', 'name to check in the aggregator certificate', 'localhost')
    .option('--insecure-dev', 'plain TCP without certificates: development only')
    .option('--provider <auto|cpu|cuda>', 'onnxruntime execution provider', 'auto')
    .option('--threads <n>', 'CPU threads for training')
    .action(async (flags: TrainerFlags) => {
      const job = loadManifest(flags.job);
      const site = job.spec.sites.find((s) => s.name === flags.site);
      if (!site) {
        throw new Error(
          `--site: "${flags.site}" is not in spec.sites (${job.spec.sites.map((s) => s.name).join(', ')})`,
        );
      }
      const dataDir = flags.data ?? site.data;
      if (!dataDir) throw new Error(`--data: required, spec.sites has no data for "${flags.site}"`);
      if (!flags.tlsDir && !flags.insecureDev) {
        throw new Error('--tls-dir: required (or --insecure-dev for plain TCP in development)');
      }
      await runTrainer({
        job,
        site: flags.site,
        dataDir,
        connection: flags.tlsDir
          ? {
              address: flags.aggregator,
              tls: readTlsDir(flags.tlsDir),
              serverName: flags.serverName,
            }
          : { address: flags.aggregator, insecureDevSite: flags.site },
        log: createLogger('trainer').child({ job: job.metadata.name, site: flags.site }),
        executionProvider: flags.provider as ExecutionProvider,
        threads: flags.threads ? Number(flags.threads) : undefined,
      });
      // gRPC keeps timers alive after the channel closes; the job is over, so leave now.
      process.exit(0);
    });
}
