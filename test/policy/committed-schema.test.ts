// policies/schema.json is what editors load (`# yaml-language-server: $schema=schema.json`);
// it must be exactly what `airlock policy schema` prints for the servers this build ships.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { policyJsonSchema } from '../../src/policy/team-policy.js';
import { SERVERS } from '../../src/servers.js';

it('policies/schema.json is up to date (regenerate: airlock policy schema > policies/schema.json)', async () => {
  const committed = JSON.parse(
    await readFile(path.resolve(import.meta.dirname, '../../policies/schema.json'), 'utf8'),
  );
  expect(committed).toEqual(JSON.parse(JSON.stringify(policyJsonSchema(await SERVERS.all()))));
});
