// Preloaded with `node --import`: records every module URL the ESM loader resolves, one per line,
// in the file named by AIRLOCK_TRACE_IMPORTS (the hooks run on the loader's own thread).
import { register } from 'node:module';

register(
  'data:text/javascript,' +
    encodeURIComponent(`
import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.AIRLOCK_TRACE_IMPORTS, r.url + '\\n');
  return r;
}`),
);
