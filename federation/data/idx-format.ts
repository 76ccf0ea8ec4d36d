/**
 * The IDX file format (the one MNIST and Fashion-MNIST ship in): a 4-byte magic number
 * `0x00 0x00 <dtype> <ndims>`, then `ndims` big-endian uint32 sizes, then the values in
 * row-major order, big-endian.
 */

/** IdxDtype names the element types the IDX format defines. */
export type IdxDtype = 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';

/** IDX_DTYPE_CODES maps each element type to the byte that stands for it in the magic number. */
export const IDX_DTYPE_CODES: Record<IdxDtype, number> = {
  uint8: 0x08,
  int8: 0x09,
  int16: 0x0b,
  int32: 0x0c,
  float32: 0x0d,
  float64: 0x0e,
};

/** IDX_DTYPE_SIZES is the width in bytes of one element of each type. */
export const IDX_DTYPE_SIZES: Record<IdxDtype, number> = {
  uint8: 1,
  int8: 1,
  int16: 2,
  int32: 4,
  float32: 4,
  float64: 8,
};

/** idxDtypeOf turns a dtype byte into its name, or undefined for a byte IDX does not define. */
export function idxDtypeOf(code: number): IdxDtype | undefined {
  const found = Object.entries(IDX_DTYPE_CODES).find(([, c]) => c === code);
  return found?.[0] as IdxDtype | undefined;
}

/** hex formats a byte or a word as 0x-prefixed hexadecimal for error messages. */
export function hex(value: number, width = 2): string {
  return `0x${value.toString(16).padStart(width, '0')}`;
}
