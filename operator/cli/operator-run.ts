import * as os from 'os';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger } from '../../federation/log';
import { Controller } from '../controller/controller';
import { KubeApi } from '../controller/kube-api';
import { LeaderElector } from '../controller/leader-election';
import { OperatorMetrics, serveHttp } from '../controller/metrics';
import type { OperatorFlags } from './operator';

function loadKubeConfig(file: string | undefined): KubeConfig {
  const config = new KubeConfig();
  if (file) config.loadFromFile(file);
  // The local node agent of test/cluster/ puts the service-account files under the container
  // root it gives each pod; a real kubelet mounts them at the usual path (prefix "").
  else if (process.env.KUBERNETES_SERVICE_HOST) {
    config.loadFromCluster(process.env.FLOTILLA_CONTAINER_ROOT ?? '');
  } else config.loadFromDefault();
  return config;
}

function port(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new Error(`${flag}: expected a port number 0..65535, got "${value}"`);
  }
  return n;
}

/** runOperator runs the controller until SIGTERM or SIGINT (the body of `flotilla operator`). */
export async function runOperator(flags: OperatorFlags): Promise<void> {
  const log = createLogger('operator');
  const leaderElect = flags.leaderElect !== 'false';
  const host = flags.bindAddress ?? process.env.POD_IP ?? '0.0.0.0';
  const kubeConfig = loadKubeConfig(flags.kubeconfig);
  const metrics = new OperatorMetrics();
  const controller = new Controller({
    kubeConfig,
    defaults: {
      operatorImage: flags.operatorImage,
      trainerImage: flags.trainerImage,
      imagePullPolicy: flags.imagePullPolicy,
    },
    log,
    metrics,
    namespace: flags.watchNamespace || undefined,
    workers: Number(flags.workers),
  });
  let fatal = false;
  let standby = leaderElect;
  const probes = {
    healthy: () => !fatal,
    // A standby replica is ready: it serves its probes and waits for the Lease.
    ready: () => standby || controller.ready,
  };
  const servers = [
    await serveHttp(host, port(flags.metricsPort, '--metrics-port'), { metrics }),
    await serveHttp(host, port(flags.healthPort, '--health-port'), { probes }),
  ];
  log.info(
    { host, metricsPort: flags.metricsPort, healthPort: flags.healthPort, leaderElect },
    'operator serving',
  );

  const elector = leaderElect
    ? new LeaderElector(
        new KubeApi(kubeConfig),
        {
          namespace: flags.leaseNamespace ?? process.env.POD_NAMESPACE ?? 'default',
          name: 'flotilla-operator-leader',
          identity: process.env.POD_NAME ?? `${os.hostname()}-${process.pid}`,
        },
        log,
      )
    : undefined;

  const shutdown = async (code: number): Promise<void> => {
    await controller.stop().catch(() => undefined);
    await elector?.stop();
    for (const server of servers) server.close();
    process.exit(code);
  };
  process.once('SIGTERM', () => void shutdown(0));
  process.once('SIGINT', () => void shutdown(0));

  const lead = async (): Promise<void> => {
    standby = false;
    metrics.leader.set(1);
    try {
      await controller.start();
    } catch (err) {
      fatal = true;
      log.error({ err: (err as Error).message }, 'controller failed to start');
      await shutdown(1);
    }
  };
  if (!elector) {
    await lead();
    return;
  }
  elector.run(
    () => void lead(),
    () => {
      // Another replica may be reconciling already: stop at once and let the pod restart.
      metrics.leader.set(0);
      fatal = true;
      void shutdown(1);
    },
  );
}
