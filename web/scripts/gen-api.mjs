// Generates src/api/schema.gen.ts from openapi.json (the gateway's OpenAPI document), writing
// only when it changes so that builds which watch the sources do not see a change every time.
import { readFile, writeFile } from 'node:fs/promises';
import openapiTS, { astToString } from 'openapi-typescript';

export async function generateApiTypes() {
  const ast = await openapiTS(new URL('../openapi.json', import.meta.url));
  const contents =
    '// Generated from web/openapi.json by scripts/gen-api.mjs: do not edit.\n' + astToString(ast);
  const target = new URL('../src/api/schema.gen.ts', import.meta.url);
  const before = await readFile(target, 'utf8').catch(() => null);
  if (before !== contents) await writeFile(target, contents);
}

if (import.meta.url === `file://${process.argv[1]}`) await generateApiTypes();
