import * as fs from 'fs';
import * as path from 'path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** PROTO_FILE is the wire protocol's path inside the repository (or the installed image). */
export const PROTO_FILE = path.join('proto', 'flotilla', 'v1', 'federation.proto');

/** DEFAULT_CHUNK_BYTES bounds the payload of one TensorChunk: 1 MiB. */
export const DEFAULT_CHUNK_BYTES = 1 << 20;

/**
 * MAX_MESSAGE_BYTES is the gRPC message limit both sides set: a chunk plus its header fits
 * with room to spare, and nothing legitimate is larger, so a bigger message is refused before
 * it is buffered.
 */
export const MAX_MESSAGE_BYTES = 4 * DEFAULT_CHUNK_BYTES + 64 * 1024;

/** The dtypes a TensorChunk may carry today, with their size in bytes. */
export const DTYPE_BYTES: Record<string, number> = { f32: 4 };

/**
 * The update encodings the aggregator understands today.
 *
 * TODO: f16, int8 and topk encodings are named by the design but not implemented; updates in
 * them are refused with INVALID_ARGUMENT, so compression cannot be used yet.
 */
export const UPDATE_ENCODINGS = ['f32'] as const;

export interface TensorChunk {
  name: string;
  dtype: string;
  shape: number[];
  offset: number;
  data: Buffer;
}

export interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
}

export interface JoinRequest {
  job: string;
}

export interface RoundTask {
  job: string;
  round: number;
  deadlineUnixMs: number;
  finished: boolean;
}

export interface ModelRequest {
  job: string;
  round: number;
}

export interface ModelHeader {
  job: string;
  round: number;
  tensors: TensorSpec[];
}

export interface ModelPart {
  header?: ModelHeader | null;
  chunk?: TensorChunk | null;
  part?: 'header' | 'chunk';
}

export interface UpdateHeader {
  job: string;
  round: number;
  examples: number;
  encoding: string;
  metrics: Record<string, number>;
}

export interface UpdatePart {
  header?: UpdateHeader | null;
  chunk?: TensorChunk | null;
  part?: 'header' | 'chunk';
}

export interface UpdateReceipt {
  round: number;
  bytesReceived: number;
}

export interface StartRoundRequest {
  job: string;
  round: number;
  participants: string[];
  deadlineUnixMs: number;
  minSites: number;
}

export interface SiteRejection {
  site: string;
  reason: string;
}

/** RoundResult is what the aggregator reports when a round closes or fails. */
export interface RoundResult {
  round: number;
  outcome: 'closed' | 'failed';
  participants: string[];
  accepted: string[];
  rejected: SiteRejection[];
  siteMetrics: Record<string, number>;
  evalMetrics: Record<string, number>;
  examples: number;
  durationMs: number;
  bytesReceived: number;
  bytesSent: number;
  reason: string;
  /** Examples each accepted site trained on this round, by site. */
  siteExamples: Record<string, number>;
}

export interface AggregatorStatus {
  job: string;
  completedRound: number;
  connectedSites: string[];
  openRound: number;
  finished: boolean;
  openRoundReported: number;
  openRoundParticipants: number;
}

/** findProtoRoot walks up from this file to the folder that holds `proto/`. */
function findProtoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, PROTO_FILE))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error(`${PROTO_FILE}: not found in ${__dirname} or any folder above it`);
    }
    dir = parent;
  }
}

interface FlotillaPackage {
  Federation: grpc.ServiceClientConstructor;
  Control: grpc.ServiceClientConstructor;
}

let loaded: FlotillaPackage | undefined;

/**
 * loadProtocol loads the `.proto` once per process. Field names are camelCase, 64-bit
 * integers become numbers (offsets and byte counts stay far below 2^53) and unset fields get
 * their defaults, so handlers never see `undefined` for a scalar.
 */
export function loadProtocol(): FlotillaPackage {
  if (loaded) return loaded;
  const root = findProtoRoot();
  const definition = protoLoader.loadSync(PROTO_FILE, {
    includeDirs: [root],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    flotilla: { v1: FlotillaPackage };
  };
  loaded = pkg.flotilla.v1;
  return loaded;
}

/** channelOptions are the options both ends use: bounded messages, keepalive for dead peers. */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  // A client's receive window: a model download is not held back every 64 KiB waiting for a
  // window update. (The server's window is not configurable in grpc-js.)
  'grpc-node.flow_control_window': 8 << 20,
};
