import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { policyCheckCommand, policySchemaCommand } from '../../src/commands/policy.js';
import { fakeServers } from './fake-servers.js';
import { makeWorkspace } from './helpers.js';

let ws: Awaited<ReturnType<typeof makeWorkspace>>;
beforeEach(async () => {
  ws = await makeWorkspace();
});
afterEach(() => ws.cleanup());

function capture() {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c.toString()));
  return { stream, text: () => chunks.join('') };
}

async function run(paths: string[] = [], configFile = ws.configFile) {
  const out = capture();
  const err = capture();
  const code = await policyCheckCommand({
    config: configFile,
    paths,
    servers: fakeServers,
    out: out.stream,
    err: err.stream,
  });
  return { code, out: out.text(), err: err.text() };
}

describe('airlock policy check', () => {
  it('prints one summary line per team and exits 0', async () => {
    await ws.write(
      'payments.yaml',
      'team: payments\nservers:\n  http:\n    hosts: [{ origin: "https://a.example" }]\n    tools: { http_request: {}, http_get: {} }\n  model: { credential: anthropic-key }\n',
    );
    await ws.write('web.yaml', 'team: web\nservers: {}\n');
    const { code, out, err } = await run();
    expect(code).toBe(0);
    expect(err).toBe('');
    const lines = out.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^ok payments .*payments\.yaml: http \(2 tools\), model$/);
    expect(lines[1]).toMatch(/^ok web .*web\.yaml: no servers$/);
  });

  it('prints every issue as file:line:col: message and exits 1', async () => {
    const a = await ws.write('a.yaml', 'team: payments\nservers:\n  htp: {}\n');
    const b = await ws.write('b.yaml', 'team: Bad\nservers: {}\nextra: true\n');
    const { code, out, err } = await run();
    expect(code).toBe(1);
    const shown = (f: string) =>
      path.relative(process.cwd(), f).startsWith('..') ? f : path.relative(process.cwd(), f);
    expect(out.trim().split('\n')).toEqual([
      `${shown(a)}:3:3: servers: unknown key "htp" (allowed: git, github, postgres, http, model)`,
      `${shown(b)}:1:7: team: team must match [a-z0-9][a-z0-9-]* (lowercase letters, digits, "-")`,
      `${shown(b)}:3:1: unknown key "extra" (allowed: team, socketGroup, servers)`,
    ]);
    expect(err).toBe('3 errors in 2 files\n');
  });

  it('checks only the given paths', async () => {
    await ws.write('broken.yaml', 'team: [\n');
    const good = await ws.write('good.yaml', 'team: good\nservers: {}\n');
    const { code, out } = await run([good]);
    expect(code).toBe(0);
    expect(out).toMatch(/^ok good /);
  });

  it('exits 1 with positions when the config itself is broken', async () => {
    const bad = await ws.write('../bad-config.yaml', 'socketDir: 1\n');
    const { code, out, err } = await run([], bad);
    expect(code).toBe(1);
    expect(out).toContain(':1:12: socketDir: expected a string, not a number');
    expect(err).toMatch(/config is invalid/);
  });

  it('policy schema prints the JSON Schema', () => {
    const out = capture();
    expect(policySchemaCommand({ servers: fakeServers, out: out.stream })).toBe(0);
    const schema = JSON.parse(out.text());
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(Object.keys(schema.properties)).toEqual(['team', 'socketGroup', 'servers']);
  });
});
