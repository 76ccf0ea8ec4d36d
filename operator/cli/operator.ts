import { Command } from 'commander';

/** OperatorFlags are the `flotilla operator` options (the chart's Deployment passes them). */
export interface OperatorFlags {
  operatorImage: string;
  trainerImage: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  metricsPort: string;
  healthPort: string;
  bindAddress?: string;
  leaderElect: string;
  leaseNamespace?: string;
  watchNamespace?: string;
  kubeconfig?: string;
  workers: string;
}

/** register adds `flotilla operator`. */
export function register(program: Command): void {
  program
    .command('operator')
    .description('Run the FederatedJob controller: pods, rounds and status of every job')
    .option(
      '--operator-image <image>',
      'image of the aggregator pods',
      'ghcr.io/flotilla/operator:latest',
    )
    .option(
      '--trainer-image <image>',
      'image of the trainer pods',
      'ghcr.io/flotilla/trainer:latest',
    )
    .option('--image-pull-policy <policy>', 'pull policy of the pods it creates')
    .option('--metrics-port <port>', 'port of /metrics', '8080')
    .option('--health-port <port>', 'port of /healthz and /readyz', '8081')
    .option('--bind-address <ip>', 'address both ports listen on (default: $POD_IP, else 0.0.0.0)')
    .option('--leader-elect <bool>', 'hold a Lease so only one replica reconciles', 'true')
    .option(
      '--lease-namespace <ns>',
      'namespace of the Lease (default: $POD_NAMESPACE, else default)',
    )
    .option('--watch-namespace <ns>', 'watch FederatedJobs in this namespace only')
    .option(
      '--kubeconfig <file>',
      'kubeconfig outside a cluster (default: in-cluster, else $KUBECONFIG)',
    )
    .option('--workers <n>', 'jobs reconciled at once', '4')
    .action(async (flags: OperatorFlags) => {
      // Loaded only when the operator runs: @kubernetes/client-node 1.x is an ES module, which
      // Node 20 requires natively but jest cannot, and every other command stays free of it.
      const { runOperator } = await import('./operator-run');
      await runOperator(flags);
    });
}
