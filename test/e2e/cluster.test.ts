/**
 * The local control plane of test/cluster/ behaves as a real cluster: a real API server,
 * scheduler and controller manager, and node agents that run pods as local processes.
 */
import {
  apply,
  ensureCluster,
  getJSON,
  kubectl,
  KubeObject,
  processAlive,
  waitFor,
} from '../cluster/kubectl';

jest.setTimeout(180_000);

const namespace = `e2e-cluster-${Date.now().toString(36)}`;

beforeAll(async () => {
  ensureCluster();
  await kubectl(['create', 'namespace', namespace]);
  // The namespace's default ServiceAccount, which every pod needs, comes from a controller.
  await waitFor('the default ServiceAccount', () =>
    kubectl(['-n', namespace, 'get', 'serviceaccount', 'default']),
  );
});

afterAll(async () => {
  await kubectl(['delete', 'namespace', namespace, '--wait=false']);
});

/** A pod of the busybox test image running `script` under /bin/sh. */
function shellPod(name: string, script: string, spec: Record<string, unknown> = {}): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { app: name } },
    spec: {
      terminationGracePeriodSeconds: 5,
      containers: [{ name: 'main', image: 'busybox:1.37', command: ['sh', '-c', script] }],
      ...spec,
    },
  };
}

async function podWhen(name: string, what: string, ok: (pod: KubeObject) => boolean) {
  return waitFor(`pod ${name}: ${what}`, async () => {
    const pod = await getJSON('pod', name, namespace);
    return ok(pod) ? pod : undefined;
  });
}

async function logs(pod: string, container = 'main'): Promise<string> {
  return kubectl(['-n', namespace, 'logs', pod, '-c', container]);
}

test('the API server reports Kubernetes v1.37.2 and each site registers a Ready GPU node', async () => {
  const version = JSON.parse(await kubectl(['version', '-o', 'json']));
  expect(version.serverVersion.gitVersion).toBe('v1.37.2');

  const nodes = JSON.parse(await kubectl(['get', 'nodes', '-o', 'json'])).items as KubeObject[];
  const bySite = Object.fromEntries(
    nodes.map((n) => [n.metadata.labels?.['flotilla.dev/site'], n]),
  );
  expect(Object.keys(bySite).sort()).toEqual(['site-a', 'site-b']);
  expect(bySite['site-a'].status?.capacity?.['nvidia.com/gpu']).toBe('2');
  expect(bySite['site-b'].status?.capacity?.['nvidia.com/gpu']).toBe('1');
  expect(bySite['site-b'].metadata.labels?.['topology.kubernetes.io/zone']).toBe('zone-b');
  for (const node of nodes) {
    const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready?.status).toBe('True');
  }
});

test('a GPU pod runs on the node of the site it selects, logs through kubectl, and ends on delete', async () => {
  const script = [
    'echo "pid $$$$ on $NODE_NAME as $POD_NAME at $POD_IP gpus $NVIDIA_VISIBLE_DEVICES"',
    'trap "echo terminating; exit 0" TERM',
    'while true; do sleep 1; done',
  ].join('; ');
  const pod = shellPod('gpu-job', script, {
    nodeSelector: { 'flotilla.dev/site': 'site-b' },
  });
  const container = (pod as { spec: { containers: Record<string, unknown>[] } }).spec.containers[0];
  container.resources = { limits: { 'nvidia.com/gpu': '1' } };
  container.env = [
    { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
  ];
  await apply(pod);

  const running = await podWhen('gpu-job', 'Running', (p) => p.status?.phase === 'Running');
  expect(running.spec?.nodeName).toBe('site-b-node');
  expect(running.status?.podIP).toMatch(/^127\.0\.\d+\.\d+$/);

  const output = await waitFor('the pod to log its pid', async () => {
    const text = await logs('gpu-job');
    return text.includes('pid ') ? text : undefined;
  });
  expect(output).toContain(`on site-b-node as gpu-job at ${running.status?.podIP} gpus 0`);
  const pid = Number(/pid (\d+)/.exec(output)?.[1]);
  expect(processAlive(pid)).toBe(true);

  await kubectl(['-n', namespace, 'delete', 'pod', 'gpu-job', '--wait=true']);
  expect(processAlive(pid)).toBe(false);
});

test('a pod that ignores SIGTERM is killed once its grace period ends', async () => {
  await apply(
    shellPod('stubborn', 'echo "pid $$$$"; trap "" TERM; while true; do sleep 1; done', {
      terminationGracePeriodSeconds: 2,
    }),
  );
  await podWhen('stubborn', 'Running', (p) => p.status?.phase === 'Running');
  const output = await waitFor('the pod to log its pid', async () => {
    const text = await logs('stubborn');
    return text.includes('pid ') ? text : undefined;
  });
  const pid = Number(/pid (\d+)/.exec(output)?.[1]);

  await kubectl(['-n', namespace, 'delete', 'pod', 'stubborn', '--wait=true']);
  expect(processAlive(pid)).toBe(false);
});

test('a pod asking for more GPUs than any node has stays Pending with the scheduler reason', async () => {
  const pod = shellPod('too-many-gpus', 'sleep 3600');
  const container = (pod as { spec: { containers: Record<string, unknown>[] } }).spec.containers[0];
  container.resources = { limits: { 'nvidia.com/gpu': '8' } };
  await apply(pod);

  const pending = await podWhen('too-many-gpus', 'marked unschedulable', (p) =>
    Boolean(
      p.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.reason === 'Unschedulable'),
    ),
  );
  expect(pending.status?.phase).toBe('Pending');
  const scheduled = pending.status?.conditions?.find((c) => c.type === 'PodScheduled');
  expect(scheduled?.status).toBe('False');
  expect(scheduled?.message).toContain('Insufficient nvidia.com/gpu');
  await kubectl(['-n', namespace, 'delete', 'pod', 'too-many-gpus']);
});

test('restartPolicy OnFailure restarts a failing container and counts the restart', async () => {
  const script = 'if [ -f /data/ran ]; then echo second run; exit 0; fi; touch /data/ran; exit 3';
  const pod = shellPod('retry', script, {
    restartPolicy: 'OnFailure',
    volumes: [{ name: 'data', emptyDir: {} }],
  });
  const container = (pod as { spec: { containers: Record<string, unknown>[] } }).spec.containers[0];
  container.volumeMounts = [{ name: 'data', mountPath: '/data' }];
  await apply(pod);
  // The emptyDir outlives a container restart, so the second run sees the first one's file.
  const done = await podWhen('retry', 'Succeeded', (p) => p.status?.phase === 'Succeeded');
  const statuses = done.status?.containerStatuses as {
    restartCount: number;
    lastState: { terminated?: { exitCode: number } };
  }[];
  expect(statuses[0].restartCount).toBe(1);
  expect(statuses[0].lastState.terminated?.exitCode).toBe(3);
  expect(await logs('retry')).toContain('second run');
});

test('Secrets and ConfigMaps reach a pod as files under its mount paths and as env', async () => {
  await kubectl([
    '-n',
    namespace,
    'create',
    'secret',
    'generic',
    'site-cert',
    '--from-literal=tls.key=secret-key-bytes',
  ]);
  await kubectl(['-n', namespace, 'create', 'configmap', 'settings', '--from-literal=rounds=5']);
  const pod = shellPod(
    'reader',
    'cat /etc/certs/tls.key; echo; cat /etc/settings/rounds; echo; echo "env $ROUNDS"; ' +
      'test -s "$FLOTILLA_CONTAINER_ROOT/var/run/secrets/kubernetes.io/serviceaccount/token" && echo token-mounted; ' +
      // Built from parts, so no mount path is rewritten: the volume also sits at its real path.
      'd=/var/run/secrets/kubernetes.io; cat $d/serviceaccount/namespace',
    {
      restartPolicy: 'Never',
      volumes: [
        { name: 'certs', secret: { secretName: 'site-cert', defaultMode: 0o400 } },
        { name: 'settings', configMap: { name: 'settings' } },
      ],
    },
  );
  const container = (pod as { spec: { containers: Record<string, unknown>[] } }).spec.containers[0];
  container.volumeMounts = [
    { name: 'certs', mountPath: '/etc/certs', readOnly: true },
    { name: 'settings', mountPath: '/etc/settings' },
  ];
  container.env = [
    { name: 'ROUNDS', valueFrom: { configMapKeyRef: { name: 'settings', key: 'rounds' } } },
  ];
  await apply(pod);

  await podWhen('reader', 'Succeeded', (p) => p.status?.phase === 'Succeeded');
  expect((await logs('reader')).split('\n')).toEqual([
    'secret-key-bytes',
    '5',
    'env 5',
    'token-mounted',
    namespace,
  ]);
});

test('deleting an owner garbage-collects its dependents', async () => {
  await kubectl(['-n', namespace, 'create', 'configmap', 'owner', '--from-literal=k=v']);
  const owner = await getJSON('configmap', 'owner', namespace);
  const dependent = shellPod('dependent', 'trap "exit 0" TERM; while true; do sleep 1; done');
  (dependent as { metadata: Record<string, unknown> }).metadata.ownerReferences = [
    { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata.uid },
  ];
  await apply(dependent);
  await podWhen('dependent', 'Running', (p) => p.status?.phase === 'Running');

  await kubectl(['-n', namespace, 'delete', 'configmap', 'owner']);
  await waitFor('the garbage collector to delete the dependent pod', async () => {
    const out = await kubectl(['-n', namespace, 'get', 'pods', '-o', 'name']);
    return out.includes('pod/dependent') ? undefined : true;
  });
});

test('a Service name resolves to its ready pod for getent and for Node.js in other pods', async () => {
  // The readiness probe connects and hangs up at once; the server must shrug that off.
  const server = `require('net').createServer((s) => {
      s.on('error', () => {});
      s.end('hello from ' + process.env.POD_NAME + '\\n');
    }).listen(8080, process.env.POD_IP)`;
  await apply({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'echo-server', namespace, labels: { app: 'echo' } },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'main',
          image: 'node:20',
          command: ['node', '-e', server],
          env: [
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
          ],
          ports: [{ containerPort: 8080, name: 'echo' }],
          readinessProbe: { tcpSocket: { port: 'echo' }, periodSeconds: 1 },
        },
      ],
    },
  });
  await apply({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'echo', namespace },
    spec: { selector: { app: 'echo' }, ports: [{ port: 8080, targetPort: 8080 }] },
  });
  const serverPod = await podWhen('echo-server', 'Ready', (p) =>
    Boolean(p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')),
  );

  const client = `
    const dns = require('dns');
    const net = require('net');
    dns.lookup('echo', (err, address) => {
      console.log('lookup echo:', err ? err.code : address);
      net.connect(8080, 'echo').on('data', (d) => process.stdout.write('reply: ' + d));
    });`;
  const script = [
    `until getent hosts echo.${namespace}.svc.cluster.local; do sleep 1; done`,
    `node -e "${client.replace(/"/g, '\\"')}"`,
  ].join('; ');
  await apply(shellPod('echo-client', script, { restartPolicy: 'Never' }));

  await podWhen('echo-client', 'Succeeded', (p) => p.status?.phase === 'Succeeded');
  const output = await logs('echo-client');
  const ip = serverPod.status?.podIP as string;
  expect(output).toMatch(
    new RegExp(`^${ip.replace(/\./g, '\\.')}\\s+echo\\.${namespace}\\.svc\\.cluster\\.local`, 'm'),
  );
  expect(output).toContain(`lookup echo: ${ip}`);
  expect(output).toContain('reply: hello from echo-server');
});
