import { readFile } from 'fs/promises';
import { DatasetError } from './dataset-error';
import type { Dataset } from './dataset';
import { maxLabelPlusOne } from './labels';

/**
 * readCsvDataset reads a CSV file of one sample per line into a Dataset.
 *
 * The first line is a header when any of its fields is not a number. The label is the column
 * named `label` (any case) when the header has one, else the first column; every other column
 * is a numeric feature, taken as it is (no scaling), so samples have shape `[columns - 1]`.
 * Fields are split on commas; quoted fields are not supported (numbers need none).
 */
export async function readCsvDataset(path: string): Promise<Dataset> {
  const lines = (await readFile(path, 'utf8')).split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  if (lines.length === 0) throw new DatasetError(path, 'empty CSV file: expected at least one row');

  const first = lines[0].split(',').map(unquote);
  const hasHeader = first.some((field) => !isNumber(field));
  const named = hasHeader ? first.findIndex((f) => f.toLowerCase() === 'label') : -1;
  const labelColumn = named >= 0 ? named : 0;
  const columns = first.length;
  if (columns < 2) {
    throw new DatasetError(
      path,
      `expected a label and at least one feature column, got ${columns} column`,
    );
  }

  const rows = lines.slice(hasHeader ? 1 : 0);
  const features = new Float32Array(rows.length * (columns - 1));
  const labels = new Int32Array(rows.length);
  rows.forEach((line, r) => {
    const lineNo = r + (hasHeader ? 2 : 1);
    const fields = line.split(',');
    if (fields.length !== columns) {
      throw new DatasetError(
        `${path}:${lineNo}`,
        `expected ${columns} fields like the first line, found ${fields.length}`,
      );
    }
    let f = r * (columns - 1);
    for (let c = 0; c < columns; c++) {
      const field = fields[c].trim();
      if (!isNumber(field)) {
        throw new DatasetError(
          `${path}:${lineNo}`,
          `column ${c + 1}: expected a number, got ${JSON.stringify(field)}`,
        );
      }
      const value = Number(field);
      if (c !== labelColumn) {
        features[f++] = value;
      } else if (!Number.isInteger(value) || value < 0) {
        throw new DatasetError(
          `${path}:${lineNo}`,
          `label out of range in column ${c + 1}: got ${field}, expected a whole class index >= 0`,
        );
      } else {
        labels[r] = value;
      }
    }
  });

  return {
    features,
    sampleShape: [columns - 1],
    labels,
    numClasses: maxLabelPlusOne(labels),
    count: rows.length,
    source: path,
  };
}

function isNumber(field: string): boolean {
  const trimmed = field.trim();
  return trimmed !== '' && Number.isFinite(Number(trimmed));
}

function unquote(field: string): string {
  return field.trim().replace(/^"(.*)"$/, '$1');
}
