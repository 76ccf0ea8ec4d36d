import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  CoreV1Event,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  V1ConfigMap,
  V1Pod,
  V1Secret,
  V1Service,
} from '@kubernetes/client-node';
import { FederatedJob, FederatedJobStatus, GROUP, PLURAL, VERSION } from '../api/federatedjob';

/** statusCode is the HTTP status of a failed API call, or undefined for other errors. */
export function statusCode(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

/** isNotFound says the object is not there (404). */
export const isNotFound = (err: unknown): boolean => statusCode(err) === 404;

/** isConflict says the object exists already, or changed under us (409). */
export const isConflict = (err: unknown): boolean => statusCode(err) === 409;

/** EventType is the severity of a Kubernetes Event. */
export type EventType = 'Normal' | 'Warning';

/** The object an Event is about: the job itself, or one of its pods. */
export interface EventSubject {
  kind: string;
  apiVersion: string;
  name: string;
  namespace: string;
  uid?: string;
}

/**
 * KubeApi is every call the controller makes to the API server. Creates tolerate an object
 * that exists already and deletes one that is gone, so a reconcile can repeat any step.
 */
export class KubeApi {
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly coordination: CoordinationV1Api;

  constructor(
    readonly config: KubeConfig,
    /** Who writes Events (source.component) and status (the field manager). */
    private readonly component = 'flotilla-operator',
  ) {
    this.core = config.makeApiClient(CoreV1Api);
    this.custom = config.makeApiClient(CustomObjectsApi);
    this.coordination = config.makeApiClient(CoordinationV1Api);
  }

  /** getJob reads a job fresh from the API server; undefined when it is gone. */
  async getJob(namespace: string, name: string): Promise<FederatedJob | undefined> {
    return this.readIfPresent(
      async () =>
        (await this.custom.getNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace,
          plural: PLURAL,
          name,
        })) as FederatedJob,
    );
  }

  /** patchJobStatus merges `status` into the job's status subresource. */
  async patchJobStatus(job: FederatedJob, status: FederatedJobStatus): Promise<FederatedJob> {
    return (await this.custom.patchNamespacedCustomObjectStatus(
      {
        group: GROUP,
        version: VERSION,
        namespace: job.metadata.namespace,
        plural: PLURAL,
        name: job.metadata.name,
        body: { status },
        fieldManager: this.component,
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as FederatedJob;
  }

  /** deleteJob deletes the job; the garbage collector then deletes what it owns. */
  async deleteJob(job: FederatedJob): Promise<void> {
    await this.ignoreMissing(() =>
      this.custom.deleteNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: job.metadata.namespace,
        plural: PLURAL,
        name: job.metadata.name,
        propagationPolicy: 'Background',
      }),
    );
  }

  /** createPod creates the pod; false when one of that name exists already. */
  createPod(pod: V1Pod): Promise<boolean> {
    return this.createOnce(() =>
      this.core.createNamespacedPod({ namespace: pod.metadata!.namespace!, body: pod }),
    );
  }

  /** createService creates the Service; false when it exists already. */
  createService(service: V1Service): Promise<boolean> {
    return this.createOnce(() =>
      this.core.createNamespacedService({
        namespace: service.metadata!.namespace!,
        body: service,
      }),
    );
  }

  /** createConfigMap creates the ConfigMap; false when it exists already. */
  createConfigMap(configMap: V1ConfigMap): Promise<boolean> {
    return this.createOnce(() =>
      this.core.createNamespacedConfigMap({
        namespace: configMap.metadata!.namespace!,
        body: configMap,
      }),
    );
  }

  /** createSecret creates the Secret; false when it exists already. */
  createSecret(secret: V1Secret): Promise<boolean> {
    return this.createOnce(() =>
      this.core.createNamespacedSecret({ namespace: secret.metadata!.namespace!, body: secret }),
    );
  }

  /** getSecret reads a Secret by name; undefined when it is not there. */
  async getSecret(namespace: string, name: string): Promise<V1Secret | undefined> {
    return this.readIfPresent(() => this.core.readNamespacedSecret({ namespace, name }));
  }

  /** getConfigMap reads a ConfigMap by name; undefined when it is not there. */
  async getConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined> {
    return this.readIfPresent(() => this.core.readNamespacedConfigMap({ namespace, name }));
  }

  /** getPod reads a pod by name; undefined when it is not there. */
  async getPod(namespace: string, name: string): Promise<V1Pod | undefined> {
    return this.readIfPresent(() => this.core.readNamespacedPod({ namespace, name }));
  }

  /** deletePod deletes a pod (gone already is fine). */
  async deletePod(namespace: string, name: string): Promise<void> {
    await this.ignoreMissing(() => this.core.deleteNamespacedPod({ namespace, name }));
  }

  /**
   * TODO: every call creates a new Event; repeats are not folded into one with a count, so a
   * job that keeps failing the same way lists each time.
   *
   * recordEvent writes a core/v1 Event about `subject`, the way `kubectl describe` lists
   * them. Events are advisory: a failure to write one is returned, never thrown.
   */
  async recordEvent(
    subject: EventSubject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<Error | undefined> {
    const now = new Date();
    const body: CoreV1Event = {
      metadata: {
        generateName: `${subject.name}.`,
        namespace: subject.namespace,
      },
      involvedObject: {
        kind: subject.kind,
        apiVersion: subject.apiVersion,
        name: subject.name,
        namespace: subject.namespace,
        uid: subject.uid,
      },
      type,
      reason,
      message: message.slice(0, 1024),
      source: { component: this.component },
      reportingComponent: this.component,
      reportingInstance: process.env.POD_NAME ?? this.component,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await this.core.createNamespacedEvent({ namespace: subject.namespace, body });
      return undefined;
    } catch (err) {
      return err as Error;
    }
  }

  private async createOnce(create: () => Promise<unknown>): Promise<boolean> {
    try {
      await create();
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  /** readIfPresent runs a read; a 404 becomes undefined, any other error is thrown. */
  private async readIfPresent<T>(read: () => Promise<T>): Promise<T | undefined> {
    try {
      return await read();
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async ignoreMissing(call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}
