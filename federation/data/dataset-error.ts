/**
 * DatasetError is the one error a reader throws for bad input. Its message names the file (or
 * directory) at fault, what was wrong, the value seen and the value expected, so that a user
 * can fix the input without reading the reader's code.
 */
export class DatasetError extends Error {
  /** The file or directory the error is about. */
  readonly source: string;

  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'DatasetError';
    this.source = source;
  }
}

/**
 * NoDatasetLayoutError says a directory holds none of the layouts known for a split, which a
 * caller that treats a split as optional (the test split) can tell from a broken file.
 */
export class NoDatasetLayoutError extends DatasetError {
  constructor(source: string, problem: string) {
    super(source, problem);
    this.name = 'NoDatasetLayoutError';
  }
}
