import * as fs from 'fs';
import * as path from 'path';
import { CRD_FILES, renderCrd } from './crd';

/**
 * writeCrds writes the FederatedJob CRD to every path of CRD_FILES under `root`, or with
 * `check` writes nothing. It returns the files that were (or, checking, would be) changed.
 */
export function writeCrds(root: string, check: boolean): string[] {
  const text = renderCrd();
  const changed: string[] = [];
  for (const file of CRD_FILES) {
    const target = path.join(root, file);
    const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : undefined;
    if (current === text) continue;
    changed.push(file);
    if (check) continue;
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, text);
  }
  return changed;
}

// `make crds` runs this from dist/operator/api/; `--check` exits 1 when a file is stale.
if (require.main === module) {
  const root = path.resolve(__dirname, '..', '..', '..');
  const check = process.argv.includes('--check');
  const changed = writeCrds(root, check);
  for (const file of changed) {
    process.stdout.write(
      check
        ? `${file}: out of date with operator/api/federatedjob.ts; run make crds\n`
        : `wrote ${file}\n`,
    );
  }
  process.exitCode = check && changed.length > 0 ? 1 : 0;
}
