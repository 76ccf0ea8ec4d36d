/** maxLabelPlusOne is the number of classes a split implies when nothing declares it. */
export function maxLabelPlusOne(labels: Int32Array): number {
  let max = -1;
  for (const label of labels) if (label > max) max = label;
  return max + 1;
}

/** classCounts counts the samples of each class among `indices` (all samples when omitted). */
export function classCounts(
  labels: Int32Array,
  numClasses: number,
  indices?: ArrayLike<number>,
): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  if (indices === undefined) {
    for (const label of labels) counts[label]++;
  } else {
    for (let i = 0; i < indices.length; i++) counts[labels[indices[i]]]++;
  }
  return counts;
}
