import { existsSync } from 'fs';
import { availableParallelism } from 'os';
import { dirname, join } from 'path';
import * as ort from 'onnxruntime-node';
import { Logger } from '../log';

/** ExecutionProvider is what a user may ask for: CUDA, CPU, or CUDA when it is there. */
export type ExecutionProvider = 'auto' | 'cpu' | 'cuda';

/** SessionSettings configure how the engine's onnxruntime sessions run. */
export interface SessionSettings {
  /** Default `auto`. */
  executionProvider?: ExecutionProvider;
  /** Intra-op threads on CPU; default every core (`os.availableParallelism()`). */
  threads?: number;
}

/**
 * EngineSessions opens onnxruntime sessions for the engine's graphs. The first session decides
 * the execution provider (CUDA if asked for or `auto` and it loads, else CPU) and logs the
 * choice once; later sessions use the same provider.
 */
export class EngineSessions {
  private provider: 'cpu' | 'cuda' | undefined;

  constructor(
    private readonly settings: SessionSettings,
    private readonly log: Logger,
  ) {}

  /** activeProvider is the provider the sessions run on, once one has been opened. */
  get activeProvider(): 'cpu' | 'cuda' | undefined {
    return this.provider;
  }

  /** open creates a session for a serialised model. */
  async open(model: Uint8Array, graph: string): Promise<ort.InferenceSession> {
    const requested = this.settings.executionProvider ?? 'auto';
    const threads = this.settings.threads ?? availableParallelism();
    const tryCuda = requested === 'cuda' || (requested === 'auto' && cudaProviderInstalled());
    if (this.provider === undefined && tryCuda) {
      try {
        const session = await ort.InferenceSession.create(
          model,
          engineSessionOptions('cuda', threads),
        );
        this.provider = 'cuda';
        this.log.info({ requested, provider: 'cuda', graph }, 'engine execution provider selected');
        return session;
      } catch (err) {
        this.provider = 'cpu';
        this.log.info(
          { requested, provider: 'cpu', threads, graph, reason: (err as Error).message },
          'engine execution provider selected',
        );
      }
    } else if (this.provider === undefined) {
      this.provider = 'cpu';
      const reason = requested === 'auto' ? 'no CUDA provider library installed' : 'asked for';
      this.log.info(
        { requested, provider: 'cpu', threads, graph, reason },
        'engine execution provider selected',
      );
    }
    return ort.InferenceSession.create(model, engineSessionOptions(this.provider, threads));
  }
}

/**
 * cudaProviderInstalled tells whether onnxruntime-node's CUDA provider library sits next to
 * its native binding. Without it, asking for CUDA only makes onnxruntime print an error
 * before the engine falls back to CPU, so `auto` does not ask.
 */
export function cudaProviderInstalled(): boolean {
  const packageDir = dirname(require.resolve('onnxruntime-node/package.json'));
  const bindingDir = join(packageDir, 'bin', 'napi-v6', process.platform, process.arch);
  return existsSync(join(bindingDir, 'libonnxruntime_providers_cuda.so'));
}

/**
 * engineSessionOptions are the onnxruntime settings of every engine session: full graph
 * optimisation, one sequential executor, `threads` intra-op threads that sleep rather than
 * spin between kernels. Spinning threads win a few percent on an idle machine but, with
 * several trainers or other work sharing the cores, measured twice slower per step.
 */
export function engineSessionOptions(
  provider: 'cpu' | 'cuda',
  threads: number,
): ort.InferenceSession.SessionOptions {
  return {
    // CPU stays listed after CUDA, for the few kernels CUDA lacks.
    executionProviders: provider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    // Warnings about unused initializers and the like go nowhere a user would act on.
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}
