/**
 * What the e2e tests need to talk to the local control plane of test/cluster/: start it when it
 * is not running, and run the same `kubectl` and `helm` a user would, built from the pinned
 * Kubernetes and Helm modules. `make test` starts and stops the cluster around the e2e tests.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** test/cluster/, where the cluster's module, tables and test data live. */
export const clusterDir = __dirname;
const binDir = path.join(clusterDir, '.build', 'bin');
const runDir = process.env.FLOTILLA_CLUSTER_RUN ?? path.join(clusterDir, '.build', 'run');

/** The admin kubeconfig `localcluster up` writes. */
export const kubeconfig = path.join(runDir, 'admin.kubeconfig');

/**
 * Starts the cluster unless it runs already (`localcluster up` is idempotent). Throws with the
 * command to run when the binaries were never built.
 */
export function ensureCluster(): void {
  const localcluster = path.join(binDir, 'localcluster');
  if (!existsSync(localcluster)) {
    throw new Error(
      `${localcluster}: missing; run \`make cluster-build\` (or \`make test\`) first`,
    );
  }
  execFileSync(localcluster, ['up'], { stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Runs kubectl against the cluster and returns its stdout; a failure throws with stderr. */
export async function kubectl(args: string[], input?: string): Promise<string> {
  return run('kubectl', args, input);
}

/** Runs helm against the cluster and returns its stdout. */
export async function helm(args: string[]): Promise<string> {
  return run('helm', args);
}

/** Applies a manifest given as an object (kubectl accepts JSON as well as YAML). */
export async function apply(manifest: object): Promise<string> {
  return kubectl(['apply', '-f', '-'], JSON.stringify(manifest));
}

/** Reads one object as JSON. */
export async function getJSON<T = KubeObject>(
  kind: string,
  name: string,
  namespace = 'default',
): Promise<T> {
  return JSON.parse(await kubectl(['-n', namespace, 'get', kind, name, '-o', 'json'])) as T;
}

/** The parts of a Kubernetes object the tests read. */
export interface KubeObject {
  metadata: { name: string; uid: string; labels?: Record<string, string> };
  spec?: Record<string, unknown> & { nodeName?: string };
  status?: Record<string, unknown> & {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    capacity?: Record<string, string>;
  };
}

/**
 * Polls `check` until it returns a value other than undefined, or throws after `timeoutMs`
 * with `what` and the last error seen. Waiting is not asserting time: the deadline only keeps a
 * broken cluster from hanging the suite.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; last error: ${String(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** True while a process with this id exists (a zombie counts as gone). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const end = stat.lastIndexOf(')');
    return stat.slice(end + 2, end + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function run(binary: string, args: string[], input?: string): Promise<string> {
  const env = { ...process.env, KUBECONFIG: kubeconfig };
  if (input === undefined) {
    const { stdout } = await execFileAsync(path.join(binDir, binary), args, {
      env,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  }
  return new Promise((resolve, reject) => {
    const child = execFile(
      path.join(binDir, binary),
      args,
      { env, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${binary} ${args.join(' ')}: ${stderr || err.message}`));
        else resolve(stdout);
      },
    );
    child.stdin?.end(input);
  });
}
