// The production build: API types, a type check, Vite, then a gzip twin of every text file
// (the gateway serves it to clients that accept gzip). `--outDir DIR` overrides web/dist.
import { spawnSync } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, constants } from 'node:zlib';
import { build } from 'vite';
import { generateApiTypes } from './gen-api.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const at = args.indexOf('--outDir');
const outDir = at >= 0 && args[at + 1] ? resolve(args[at + 1]) : join(root, 'dist');

await generateApiTypes();
const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '--noEmit'], {
  cwd: root,
  stdio: 'inherit',
});
if (tsc.status !== 0) {
  console.error('the web client does not type-check');
  process.exit(1);
}
await build({ root, logLevel: 'warn', build: { outDir, emptyOutDir: true } });

const compressible = /\.(html|js|mjs|css|json|webmanifest|svg|txt)$/;
async function* files(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* files(path);
    else yield path;
  }
}
for await (const path of files(outDir)) {
  if (!compressible.test(path)) continue;
  const raw = await readFile(path);
  const gz = gzipSync(raw, { level: constants.Z_BEST_COMPRESSION });
  if (gz.length < raw.length) await writeFile(`${path}.gz`, gz);
}
