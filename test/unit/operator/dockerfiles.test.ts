/**
 * The images are never built on this machine (no container engine), so these tests read the
 * Dockerfiles and check what can be checked without building: the entrypoint runs a file the
 * build produces, every file copied from the context is there and not ignored, and the
 * trainer installs onnxruntime-node's CUDA provider the way its install script expects.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parse } from 'yaml';
import { buildAggregatorPod } from '../../../operator/controller/builders';
import { FederatedJob } from '../../../operator/api/federatedjob';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const DOCKERFILES = ['operator/Dockerfile', 'trainer-image/Dockerfile'];

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name?: string;
  steps: Instruction[];
}

/** readDockerfile splits a Dockerfile into stages of instructions (continuations joined). */
function readDockerfile(file: string): { args: Record<string, string>; stages: Stage[] } {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8').replace(/\\\n/g, ' ');
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m || line.trim().startsWith('#')) continue;
    const [, op, rest] = m;
    if (op === 'ARG' && stages.length === 0) {
      const [k, v] = rest.split('=');
      args[k] = v;
    } else if (op === 'FROM') {
      const [image, , name] = rest.split(/\s+/);
      stages.push({
        from: image.replace(/\$\{(\w+)\}/g, (_, k: string) => args[k]),
        name,
        steps: [],
      });
    } else {
      stages[stages.length - 1].steps.push({ op, args: rest.trim() });
    }
  }
  return { args, stages };
}

/** dockerignored says whether .dockerignore keeps a top-level path out of the context. */
function dockerignored(p: string): boolean {
  const patterns = fs
    .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const top = p.split('/')[0];
  return patterns.some((pat) =>
    pat.startsWith('*') ? p.endsWith(pat.slice(1)) : pat === top || pat === p,
  );
}

/** The final stage's view: which absolute path in the image comes from where. */
function finalCopies(stage: Stage): Array<{ from?: string; src: string; dest: string }> {
  let workdir = '/';
  const copies: Array<{ from?: string; src: string; dest: string }> = [];
  for (const step of stage.steps) {
    if (step.op === 'WORKDIR') workdir = path.posix.resolve(workdir, step.args);
    if (step.op !== 'COPY') continue;
    const words = step.args.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
    const [src, dest] = words.filter((w) => !w.startsWith('--'));
    copies.push({ from, src, dest: path.posix.resolve(workdir, dest) });
  }
  return copies;
}

describe.each(DOCKERFILES)('%s', (file) => {
  const { stages } = readDockerfile(file);
  const final = stages[stages.length - 1];
  const build = stages.find((s) => s.name === 'build')!;
  const copies = finalCopies(final);
  const entrypoint = JSON.parse(final.steps.find((s) => s.op === 'ENTRYPOINT')!.args) as string[];

  test('the entrypoint runs bin/flotilla.js, copied from the repository', () => {
    expect(entrypoint[0]).toBe('node');
    const script = entrypoint[1];
    const copy = copies.find((c) => !c.from && script.startsWith(`${c.dest}/`));
    expect(copy).toBeDefined();
    const source = path.join(copy!.src, path.posix.relative(copy!.dest, script));
    expect(fs.existsSync(path.join(ROOT, source))).toBe(true);
    expect(dockerignored(source)).toBe(false);
  });

  test('what bin/flotilla.js loads, dist/operator/cli/main.js, is compiled in the build stage', () => {
    const launcher = fs.readFileSync(path.join(ROOT, 'bin', 'flotilla.js'), 'utf8');
    expect(launcher).toContain("path.join(__dirname, '..', 'dist', 'operator', 'cli', 'main.js')");
    const dist = copies.find((c) => c.from === 'build' && c.dest === '/app/dist');
    expect(dist?.src).toBe('/src/dist');
    const tsc = build.steps.find(
      (s) => s.op === 'RUN' && s.args.includes('tsc -p tsconfig.build.json'),
    );
    expect(tsc).toBeDefined();
    const config = JSON.parse(fs.readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8'));
    expect(config.include).toContain('operator');
    expect(fs.existsSync(path.join(ROOT, 'operator', 'cli', 'main.ts'))).toBe(true);
    // Every source folder the build compiles is copied into the build stage.
    const copied = build.steps.filter((s) => s.op === 'COPY').map((s) => s.args.split(/\s+/)[0]);
    for (const folder of ['federation', 'operator', 'trainer-image'])
      expect(copied).toContain(folder);
  });

  test('every file copied from the context exists and is not ignored', () => {
    const fromContext = stages
      .flatMap((s) => s.steps)
      .filter((s) => s.op === 'COPY' && !s.args.includes('--from='))
      .flatMap((s) => s.args.split(/\s+/).slice(0, -1));
    expect(fromContext.length).toBeGreaterThan(0);
    for (const src of fromContext) {
      expect({ src, exists: fs.existsSync(path.join(ROOT, src)) }).toEqual({ src, exists: true });
      expect({ src, ignored: dockerignored(src) }).toEqual({ src, ignored: false });
    }
  });

  test('the proto files the runtime loads are in the image', () => {
    expect(copies).toContainEqual({ from: undefined, src: 'proto', dest: '/app/proto' });
  });

  test('runs as the non-root user the pods ask for', () => {
    const user = final.steps.find((s) => s.op === 'USER')!.args;
    const job = {
      metadata: { name: 'j', namespace: 'n', uid: 'u' },
      spec: { sites: [], aggregator: { stagingSlots: 2 }, model: { zoo: 'mlp', seed: 0 } },
    } as unknown as FederatedJob;
    const pod = buildAggregatorPod(job, { operatorImage: 'x', trainerImage: 'y' });
    const ctx = pod.spec!.securityContext!;
    expect(user).toBe(`${ctx.runAsUser}:${ctx.runAsGroup}`);
  });

  test('builds on Node 20', () => {
    expect(
      stages.filter((s) => s.from.startsWith('node:')).map((s) => s.from.split(':')[1]),
    ).toEqual(expect.arrayContaining([expect.stringMatching(/^20-/)]));
  });
});

describe('the trainer image', () => {
  const { stages } = readDockerfile('trainer-image/Dockerfile');
  const build = stages.find((s) => s.name === 'build')!;
  const install = build.steps.find((s) => s.op === 'RUN' && s.args.includes('script/install.js'))!;

  test('runs on a CUDA runtime base with cuDNN', () => {
    expect(stages[stages.length - 1].from).toMatch(/^nvidia\/cuda:12\.[\d.]+-cudnn-runtime-/);
  });

  test("installs the CUDA provider through onnxruntime-node's own install script and variable", () => {
    expect(install.args).toContain(
      'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js',
    );
    const ort = path.join(ROOT, 'node_modules', 'onnxruntime-node', 'script');
    expect(fs.readFileSync(path.join(ort, 'install-utils.js'), 'utf8')).toContain(
      'process.env.ONNXRUNTIME_NODE_INSTALL',
    );
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const metadata = require(path.join(ort, 'install-metadata.js')) as {
      requirements: Record<string, string[]>;
      manifests: Record<string, Record<string, unknown>>;
    };
    expect(metadata.requirements['linux/x64']).toContain('cuda12');
    expect(Object.keys(metadata.manifests['linux/x64:cuda12'])).toContain(
      './libonnxruntime_providers_cuda.so',
    );
    // The build checks for the library where the script puts it.
    expect(install.args).toContain(
      'test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so',
    );
  });
});

describe('the chart', () => {
  test('its default images are ones the local cluster knows how to run', () => {
    const values = parse(
      fs.readFileSync(path.join(ROOT, 'charts', 'flotilla', 'values.yaml'), 'utf8'),
    );
    const table = parse(
      fs.readFileSync(path.join(ROOT, 'test', 'cluster', 'images.yaml'), 'utf8'),
    ) as {
      images: Array<{ match: string }>;
    };
    const known = (image: string) =>
      table.images.some((e) =>
        new RegExp(`^${e.match.replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*')}$`).test(image),
      );
    expect(known(`${values.image.repository}:0.1.0`)).toBe(true);
    expect(known(`${values.trainerImage.repository}:0.1.0`)).toBe(true);
  });
});
