import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, ConfigError, type AirlockConfig } from '../../src/config/airlock-yaml.js';
import { createLogger } from '../../src/log.js';
import { PolicyStore } from '../../src/policy/team-policy.js';
import { fakeServers } from './fake-servers.js';
import { makeWorkspace } from './helpers.js';
import { pino } from 'pino';
import { Writable } from 'node:stream';

const policy = (team: string, tools: string) =>
  `team: ${team}\nservers:\n  http:\n    hosts: [{ origin: "https://a.example" }]\n    tools: ${tools}\n`;

let ws: Awaited<ReturnType<typeof makeWorkspace>>;
let config: AirlockConfig;
let logLines: string[];
let store: PolicyStore | undefined;

function captureLogger() {
  logLines = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logLines.push(chunk.toString());
      cb();
    },
  });
  return pino({ level: 'info' }, sink);
}

beforeEach(async () => {
  ws = await makeWorkspace();
  config = await loadConfig(ws.configFile);
});
afterEach(async () => {
  store?.close();
  store = undefined;
  await ws.cleanup();
});

function toolNames(team: string): string[] {
  return Object.keys(store!.get(team)?.servers.http?.tools ?? {});
}

/** Resolves with the next `change` event, or rejects after `ms`. */
function nextChange(s: PolicyStore, ms = 5_000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no change event within ' + ms + 'ms')), ms);
    s.once('change', (teams) => {
      clearTimeout(timer);
      resolve(teams);
    });
  });
}

describe('PolicyStore', () => {
  it('loads every team and refuses to start with a broken policy, listing every issue', async () => {
    await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    await ws.write('web.yaml', policy('web', '{ http_get: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    expect(store.teams().map((p) => p.team)).toEqual(['payments', 'web']);
    expect(toolNames('payments')).toEqual(['http_request']);
    expect(store.get('nobody')).toBeUndefined();
    store.close();

    await ws.write('broken.yaml', 'team: broken\nservers:\n  nope: {}\nextra: 1\n');
    const err = await PolicyStore.load(config, fakeServers, captureLogger()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const file = path.join(ws.policies, 'broken.yaml');
    expect((err as ConfigError).issues.map((i) => `${i.file}:${i.line}:${i.col}`)).toEqual([
      `${file}:3:3`,
      `${file}:4:1`,
    ]);
    expect((err as ConfigError).message).toContain(`${file}:3:3: servers: unknown key "nope"`);
  });

  it('keeps the last good policy of a broken file, logs why, and picks up the fix', async () => {
    const file = await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    const events: string[][] = [];
    store.on('change', (teams) => events.push(teams));

    await writeFile(file, policy('payments', '{ http_request: {}, bogus_tool: {} }'));
    const broken = await store.reload();
    expect(broken.changed).toEqual([]);
    expect(broken.errors.map((i) => `${i.file}:${i.line}:${i.col}`)).toEqual([`${file}:5:32`]);
    expect(toolNames('payments')).toEqual(['http_request']);
    expect(logLines.join('')).toContain(`${file}:5:32: servers.http.tools: unknown key \\"bogus_tool\\"`);
    expect(logLines.join('')).toContain('keeping its last good version');
    expect(events).toEqual([]);

    await writeFile(file, policy('payments', '{ http_request: {}, http_get: {} }'));
    const fixed = await store.reload();
    expect(fixed).toEqual({ changed: ['payments'], errors: [] });
    expect(toolNames('payments')).toEqual(['http_request', 'http_get']);
    expect(events).toEqual([['payments']]);

    // Nothing changed: no event.
    expect(await store.reload()).toEqual({ changed: [], errors: [] });
    expect(events).toHaveLength(1);
  });

  it('a removed file removes the team; a new file adds one', async () => {
    const payments = await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    await ws.write('web.yaml', policy('web', '{ http_get: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    await rm(payments);
    await ws.write('ops.yml', policy('ops', '{ http_get: {} }'));
    expect(await store.reload()).toEqual({ changed: ['ops', 'payments'], errors: [] });
    expect(store.teams().map((p) => p.team)).toEqual(['ops', 'web']);
    expect(store.get('payments')).toBeUndefined();
  });

  it('a new broken file does not add its team, and a duplicate team does not displace the first', async () => {
    await ws.write('a.yaml', policy('payments', '{ http_request: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    await ws.write('b.yaml', policy('payments', '{ http_get: {} }'));
    await ws.write('c.yaml', policy('newteam', '{ nope: {} }'));
    const result = await store.reload();
    expect(result.changed).toEqual([]);
    expect(result.errors.map((i) => path.basename(i.file))).toEqual(['b.yaml', 'c.yaml']);
    expect(toolNames('payments')).toEqual(['http_request']);
    expect(store.get('newteam')).toBeUndefined();
  });

  it('a new file that sorts first and claims a team does not take the team over', async () => {
    await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    // A copy an operator forgot about, or a file someone else dropped in: it sorts before the original.
    await ws.write('0-copy.yaml', policy('payments', '{ http_get: {} }'));
    const result = await store.reload();
    expect(result.changed).toEqual([]);
    expect(result.errors.map((i) => i.message)).toEqual([
      expect.stringMatching(/^team: team "payments" is already defined in .*0-copy\.yaml/),
    ]);
    expect(toolNames('payments')).toEqual(['http_request']);
    expect(logLines.join('')).toContain('team \\"payments\\" is defined in more than one file');
    // Once the copy is gone the original applies again, unchanged.
    await rm(path.join(ws.policies, '0-copy.yaml'));
    expect((await store.reload()).changed).toEqual([]);
  });

  it('a team defined twice and never loaded before gets no policy', async () => {
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    await ws.write('a.yaml', policy('payments', '{ http_get: {} }'));
    await ws.write('b.yaml', policy('payments', '{ http_request: {} }'));
    const result = await store.reload();
    expect(result.changed).toEqual([]);
    expect(store.get('payments')).toBeUndefined();
  });

  it('a burst of reload requests costs one reload, and each caller sees its result', async () => {
    await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    await ws.write('broken.yaml', 'team: [\n'); // every reload logs this file's error once
    logLines = [];
    const results = await Promise.all(Array.from({ length: 200 }, () => store!.reload()));
    expect(results.every((r) => r.errors.length === 1)).toBe(true);
    expect(logLines.filter((l) => l.includes('broken.yaml')).length).toBe(1);
    // A request made after that reload started reads the folder again.
    await rm(path.join(ws.policies, 'broken.yaml'));
    expect((await store.reload()).errors).toEqual([]);
  });

  it('keeps every team when the policy folder itself cannot be read', async () => {
    await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    const moved = path.join(ws.dir, 'moved');
    await rename(ws.policies, moved);
    const result = await store.reload();
    expect(result.changed).toEqual([]);
    expect(result.errors.map((i) => i.message)).toEqual(['cannot read policy folder (ENOENT)']);
    expect(toolNames('payments')).toEqual(['http_request']);
    await rename(moved, ws.policies);
  });

  it('watch() notices an edit and an editor-style rename-replace', async () => {
    const file = await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    store = await PolicyStore.load(config, fakeServers, captureLogger());
    store.watch();

    let change = nextChange(store);
    await writeFile(file, policy('payments', '{ http_get: {} }'));
    expect(await change).toEqual(['payments']);
    expect(toolNames('payments')).toEqual(['http_get']);

    // Write a temp file and rename it over the policy (vim, VS Code, atomic writers).
    change = nextChange(store);
    const tmp = path.join(ws.policies, '.payments.yaml.tmp');
    await writeFile(tmp, policy('payments', '{ http_request: {}, http_get: {} }'));
    await rename(tmp, file);
    expect(await change).toEqual(['payments']);
    expect(toolNames('payments')).toEqual(['http_request', 'http_get']);

    // Still watching after the replace.
    change = nextChange(store);
    await rm(file);
    expect(await change).toEqual(['payments']);
    expect(store.teams()).toEqual([]);
  });

  it('close() stops watching', async () => {
    const file = await ws.write('payments.yaml', policy('payments', '{ http_request: {} }'));
    store = await PolicyStore.load(config, fakeServers, createLogger(undefined, 'silent'));
    store.watch();
    store.close();
    await writeFile(file, policy('payments', '{ http_get: {} }'));
    await expect(nextChange(store, 400)).rejects.toThrow(/no change event/);
    expect(toolNames('payments')).toEqual(['http_request']);
  });
});
