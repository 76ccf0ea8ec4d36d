#!/usr/bin/env node
// The `flotilla` command runs the compiled CLI; `make build` (or `npm run build`) produces it.
const path = require('path');
const fs = require('fs');

const entry = path.join(__dirname, '..', 'dist', 'operator', 'cli', 'main.js');
if (!fs.existsSync(entry)) {
  process.stderr.write(`flotilla: ${entry} is missing; run "make build" first\n`);
  process.exit(2);
}
require(entry)
  .main(process.argv)
  .catch((err) => {
    process.stderr.write(`flotilla: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
