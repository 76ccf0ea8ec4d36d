import { readFile } from 'fs/promises';
import { promisify } from 'util';
import { gunzip } from 'zlib';
import { DatasetError } from './dataset-error';

const gunzipAsync = promisify(gunzip);

/** isGzip tells a gzip stream by its two magic bytes, whatever the file is called. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * readFileBytes reads a whole file and inflates it when it is gzip, so readers take
 * `name` and `name.gz` alike. A damaged or cut-off gzip stream becomes a DatasetError.
 */
export async function readFileBytes(path: string): Promise<Buffer> {
  const raw = await readFile(path);
  if (!isGzip(raw)) return raw;
  try {
    return await gunzipAsync(raw);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new DatasetError(path, `gzip stream is truncated or corrupt (${reason})`);
  }
}
