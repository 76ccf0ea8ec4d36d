import * as grpc from '@grpc/grpc-js';
import { NamedTensor } from '../engine/tensor';
import { TensorAssembler, tensorChunks } from './chunks';
import { clientCredentials, DEV_SITE_METADATA, TlsFiles } from './identity';
import {
  AggregatorStatus,
  CHANNEL_OPTIONS,
  DEFAULT_CHUNK_BYTES,
  loadProtocol,
  ModelPart,
  RoundResult,
  RoundTask,
  StartRoundRequest,
  UpdateHeader,
  UpdatePart,
  UpdateReceipt,
} from './wire';

/**
 * Connection says how to reach the aggregator: with this identity's TLS files, or, for
 * development only, over plain TCP naming the site in a metadata header.
 */
export type Connection =
  | { address: string; tls: TlsFiles; serverName?: string }
  | { address: string; insecureDevSite?: string };

/** RpcClient is what grpc-js makes from the service definition; calls are looked up by name. */
export type RpcClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function open(
  service: 'Federation' | 'Control',
  conn: Connection,
): { client: RpcClient; metadata: grpc.Metadata } {
  const Ctor = loadProtocol()[service];
  const metadata = new grpc.Metadata();
  let credentials: grpc.ChannelCredentials;
  const options: grpc.ChannelOptions = { ...CHANNEL_OPTIONS };
  if ('tls' in conn) {
    credentials = clientCredentials(conn.tls);
    if (conn.serverName) options['grpc.ssl_target_name_override'] = conn.serverName;
  } else {
    credentials = grpc.credentials.createInsecure();
    if (conn.insecureDevSite) metadata.set(DEV_SITE_METADATA, conn.insecureDevSite);
  }
  return { client: new Ctor(conn.address, credentials, options) as unknown as RpcClient, metadata };
}

/** FederationClient is the trainer's side of the Federation service. */
export class FederationClient {
  private readonly client: RpcClient;
  private readonly metadata: grpc.Metadata;

  constructor(conn: Connection) {
    ({ client: this.client, metadata: this.metadata } = open('Federation', conn));
  }

  /** join opens this site's task stream. */
  join(job: string): grpc.ClientReadableStream<RoundTask> {
    return this.client.join({ job }, this.metadata) as grpc.ClientReadableStream<RoundTask>;
  }

  /** downloadModel fetches the global model of a round and the payload bytes it took. */
  async downloadModel(
    job: string,
    round: number,
  ): Promise<{ tensors: NamedTensor[]; bytes: number }> {
    const stream = this.client.downloadModel(
      { job, round },
      this.metadata,
    ) as grpc.ClientReadableStream<ModelPart>;
    let assembler: TensorAssembler | undefined;
    let bytes = 0;
    for await (const part of stream as AsyncIterable<ModelPart>) {
      if (part.header) {
        assembler = new TensorAssembler(part.header.tensors);
      } else if (part.chunk) {
        if (!assembler) throw new Error('model stream: a chunk came before the header');
        assembler.add(part.chunk);
        bytes += part.chunk.data.length;
      }
    }
    if (!assembler) throw new Error('model stream ended without a header');
    return { tensors: assembler.finish(), bytes };
  }

  /**
   * pushParts sends any sequence of update parts, waiting for the transport to drain between
   * writes so that at most a few chunks are buffered. Tests use it to send malformed streams.
   */
  pushParts(
    parts: Iterable<UpdatePart>,
    options: { abortAfter?: number } = {},
  ): Promise<UpdateReceipt> {
    return new Promise((resolve, reject) => {
      const call = this.client.pushUpdate(
        this.metadata,
        (err: grpc.ServiceError | null, receipt: UpdateReceipt) => {
          if (err) reject(err);
          else resolve(receipt);
        },
      ) as grpc.ClientWritableStream<UpdatePart>;
      const iterator = parts[Symbol.iterator]();
      let sent = 0;
      const pump = (): void => {
        for (;;) {
          if (options.abortAfter !== undefined && sent >= options.abortAfter) {
            call.cancel();
            return;
          }
          const next = iterator.next();
          if (next.done) {
            call.end();
            return;
          }
          sent += 1;
          if (!call.write(next.value)) {
            call.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
  }

  /** pushUpdate sends an update: header, then the delta tensors in chunks. */
  pushUpdate(
    header: UpdateHeader,
    delta: readonly NamedTensor[],
    chunkBytes = DEFAULT_CHUNK_BYTES,
  ): Promise<UpdateReceipt> {
    return this.pushParts(updateParts(header, delta, chunkBytes));
  }

  close(): void {
    this.client.close();
  }
}

/** updateParts yields the messages of one update stream. */
export function* updateParts(
  header: UpdateHeader,
  delta: readonly NamedTensor[],
  chunkBytes = DEFAULT_CHUNK_BYTES,
): Generator<UpdatePart> {
  yield { header };
  for (const chunk of tensorChunks(delta, chunkBytes)) yield { chunk };
}

/** ControlClient is the coordinator's side of the Control service. */
export class ControlClient {
  private readonly client: RpcClient;
  private readonly metadata: grpc.Metadata;

  constructor(conn: Connection) {
    ({ client: this.client, metadata: this.metadata } = open('Control', conn));
  }

  private unary<Res>(method: string, request: unknown, timeoutMs = 30_000): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client[method](
        request,
        this.metadata,
        { deadline: Date.now() + timeoutMs },
        (err: grpc.ServiceError | null, reply: Res) => (err ? reject(err) : resolve(reply)),
      );
    });
  }

  startRound(req: StartRoundRequest): Promise<{ round: number }> {
    return this.unary('startRound', req);
  }

  getStatus(timeoutMs?: number): Promise<AggregatorStatus> {
    return this.unary('getStatus', {}, timeoutMs);
  }

  finish(reason: string): Promise<{ modelPath: string }> {
    return this.unary('finish', { reason }, 120_000);
  }

  watchRounds(fromRound: number): grpc.ClientReadableStream<RoundResult> {
    return this.client.watchRounds(
      { fromRound },
      this.metadata,
    ) as grpc.ClientReadableStream<RoundResult>;
  }

  /** waitReady resolves once the channel is connected, or rejects after `timeoutMs`. */
  waitReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())),
    );
  }

  close(): void {
    this.client.close();
  }
}
