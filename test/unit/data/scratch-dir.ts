import { mkdtemp, rm, writeFile } from 'fs/promises';
import { tmpdir } from 'os';
import { join } from 'path';
import { loadDataset } from '../../../federation/data/dataset';
import { DatasetError } from '../../../federation/data/dataset-error';

/** ScratchDir is a fresh dataset directory per test, with ways to fill and read it. */
export interface ScratchDir {
  /** path is the current test's directory. */
  readonly path: string;
  /** put writes one file into the directory. */
  put(name: string, content: Uint8Array | string): Promise<void>;
  /** loadError loads a split, expects it to fail with a DatasetError, and returns that error. */
  loadError(split?: 'train' | 'test'): Promise<DatasetError>;
}

/**
 * useScratchDir registers beforeEach/afterEach hooks that make and remove a temporary
 * directory for every test of the calling file.
 */
export function useScratchDir(prefix: string): ScratchDir {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return {
    get path() {
      return dir;
    },
    put: (name, content) => writeFile(join(dir, name), content),
    async loadError(split = 'train') {
      const err = await loadDataset(dir, split).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DatasetError);
      return err as DatasetError;
    },
  };
}
