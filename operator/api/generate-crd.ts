import * as fs from 'fs';
import * as path from 'path';
import { CRD_FILES, renderCrd } from './crd';

/**
 * generate-crd writes the FederatedJob CRD to every path of CRD_FILES (`make crds`). With
 * `--check` it writes nothing and exits 1 when a checked-in file differs from the types.
 */
function main(argv: string[]): number {
  const root = path.resolve(__dirname, '..', '..', '..');
  const check = argv.includes('--check');
  const text = renderCrd();
  let stale = 0;
  for (const file of CRD_FILES) {
    const target = path.join(root, file);
    const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : undefined;
    if (current === text) continue;
    if (check) {
      process.stderr.write(
        `${file}: out of date with operator/api/federatedjob.ts; run make crds\n`,
      );
      stale++;
      continue;
    }
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, text);
    process.stdout.write(`wrote ${file}\n`);
  }
  return stale > 0 ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
