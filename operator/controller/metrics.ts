import * as http from 'http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * OperatorMetrics are the Prometheus series the operator exports on /metrics. Each registry
 * is its own, so two controllers in one process (tests) do not share counters.
 */
export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: 'flotilla_reconcile_total',
    help: 'Reconciles of FederatedJobs, by result (success, error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly reconcileSeconds = new Histogram({
    name: 'flotilla_reconcile_duration_seconds',
    help: 'Time one reconcile of a FederatedJob took.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'flotilla_workqueue_depth',
    help: 'Jobs waiting for a reconcile.',
    registers: [this.registry],
  });
  readonly rounds = new Counter({
    name: 'flotilla_rounds_total',
    help: 'Rounds the aggregators reported, by outcome (closed, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly roundSeconds = new Histogram({
    name: 'flotilla_round_duration_seconds',
    help: 'Duration of a round as the aggregator measured it.',
    buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly roundOverheadSeconds = new Histogram({
    name: 'flotilla_round_operator_overhead_seconds',
    help:
      "The operator's share of a round: wall time from the previous round's result to this " +
      "one's, less the aggregator's own round duration.",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly firstRoundSeconds = new Histogram({
    name: 'flotilla_first_round_latency_seconds',
    help: 'Time from the creation of a FederatedJob to the start of its first round.',
    buckets: [1, 2, 5, 10, 20, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly siteReplacements = new Counter({
    name: 'flotilla_trainer_replacements_total',
    help: 'Trainer pods the controller replaced.',
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'flotilla_leader',
    help: '1 while this replica holds the leader Lease, else 0.',
    registers: [this.registry],
  });

  constructor(processMetrics = true) {
    if (processMetrics) collectDefaultMetrics({ register: this.registry });
  }
}

/** Probes are what /healthz and /readyz report. */
export interface Probes {
  /** Alive: the event loop answers and nothing fatal happened. */
  healthy(): boolean;
  /** Ready: informers have synced (a standby replica is ready too). */
  ready(): boolean;
}

/**
 * serveHttp answers /metrics from `metrics`, and /healthz and /readyz from `probes`, on
 * `host:port`; it resolves with the server once it listens.
 */
export function serveHttp(
  host: string,
  port: number,
  routes: { metrics?: OperatorMetrics; probes?: Probes },
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (path === '/metrics' && routes.metrics) {
      const registry = routes.metrics.registry;
      registry.metrics().then(
        (text) => reply(200, text, registry.contentType),
        (err: Error) => reply(500, err.message),
      );
    } else if (path === '/healthz' && routes.probes) {
      if (routes.probes.healthy()) reply(200, 'ok\n');
      else reply(500, 'unhealthy\n');
    } else if (path === '/readyz' && routes.probes) {
      if (routes.probes.ready()) reply(200, 'ok\n');
      else reply(503, 'informers not synced\n');
    } else {
      reply(404, 'not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
