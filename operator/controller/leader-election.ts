import { V1Lease } from '@kubernetes/client-node';
import { Logger } from '../../federation/log';
import { isConflict, isNotFound, KubeApi } from './kube-api';

/** LeaseSettings say which Lease is contended for and how long a holder keeps it. */
export interface LeaseSettings {
  namespace: string;
  name: string;
  /** This replica's identity in the Lease (its pod name). */
  identity: string;
  /** A Lease not renewed for this long may be taken over. Default 15 s. */
  leaseDurationSeconds?: number;
  /** How often the holder renews and a candidate tries. Default 2 s. */
  retryPeriodMs?: number;
}

/**
 * LeaderElector holds a coordination.k8s.io Lease so that of several operator replicas only
 * one reconciles. A replica that cannot renew within the lease duration has lost the lead
 * and must stop acting at once (the operator exits, as controller-runtime does), since
 * another replica may already have taken over.
 */
export class LeaderElector {
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private lastRenew = 0;

  constructor(
    private readonly api: KubeApi,
    private readonly settings: LeaseSettings,
    private readonly log: Logger,
  ) {}

  /** isLeader says whether this replica holds the Lease now. */
  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * run tries for the Lease until it holds it, then keeps renewing it; `lost` is called once
   * if it stops being the leader.
   */
  run(elected: () => void, lost: () => void): void {
    const tick = async (): Promise<void> => {
      let held = false;
      try {
        held = await this.tryAcquireOrRenew();
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'lease renewal failed');
      }
      const now = Date.now();
      if (held) {
        this.lastRenew = now;
        if (!this.leading) {
          this.leading = true;
          this.log.info(
            { lease: this.settings.name, identity: this.settings.identity },
            'became leader',
          );
          elected();
        }
      } else if (this.leading && now - this.lastRenew > this.durationMs()) {
        this.leading = false;
        this.log.error({ lease: this.settings.name }, 'lost leadership');
        lost();
        return;
      }
      this.timer = setTimeout(() => void tick(), this.settings.retryPeriodMs ?? 2000);
    };
    void tick();
  }

  /** stop ends renewing and gives the Lease up, so a standby takes over without waiting. */
  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.read();
      if (lease?.spec?.holderIdentity !== this.settings.identity) return;
      lease.spec.holderIdentity = undefined;
      await this.api.coordination.replaceNamespacedLease({
        namespace: this.settings.namespace,
        name: this.settings.name,
        body: lease,
      });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'lease release failed');
    }
  }

  private durationMs(): number {
    return (this.settings.leaseDurationSeconds ?? 15) * 1000;
  }

  private async read(): Promise<V1Lease | undefined> {
    try {
      return await this.api.coordination.readNamespacedLease({
        namespace: this.settings.namespace,
        name: this.settings.name,
      });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.settings;
    const now = microTime(new Date());
    const lease = await this.read();
    if (!lease) {
      try {
        await this.api.coordination.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds: this.settings.leaseDurationSeconds ?? 15,
              acquireTime: now,
              renewTime: now,
              leaseTransitions: 0,
            },
          },
        });
        return true;
      } catch (err) {
        if (isConflict(err)) return false;
        throw err;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    const renewed = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const duration = (spec.leaseDurationSeconds ?? 15) * 1000;
    const expired = !holder || Date.now() - renewed > duration;
    if (holder !== identity && !expired) return false;
    lease.spec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds: this.settings.leaseDurationSeconds ?? 15,
      renewTime: now,
      ...(holder !== identity && {
        acquireTime: now,
        leaseTransitions: (spec.leaseTransitions ?? 0) + 1,
      }),
    };
    try {
      // The resourceVersion in `lease` makes this a compare-and-swap: of two replicas racing
      // for an expired Lease, one gets a conflict.
      await this.api.coordination.replaceNamespacedLease({ namespace, name, body: lease });
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }
}

/**
 * microTime writes a time the way a Lease's MicroTime fields must be sent (six fractional
 * digits); the client library passes such fields through as given, and a Date would go out
 * with three, which the API server refuses.
 */
function microTime(time: Date): Date {
  return time.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z') as unknown as Date;
}
