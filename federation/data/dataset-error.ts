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
