// Rate-limit counters survive a restart (stateDir/ratelimits.json). What is read back must not
// lock a team out for longer than one period, whatever the file says.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createCore, sanitizeRateState, type Core } from '../../src/broker.js';
import { loadConfig } from '../../src/config/airlock-yaml.js';
import { silentLogger } from '../../src/log.js';
import { makeInstallation, type Installation } from '../helpers/fixture.js';

const HOUR = { count: 1, periodMs: 3_600_000, text: '1/hour' };
const KEY = 'acme/http/http_request';

let inst: Installation | undefined;
let core: Core | undefined;
afterEach(async () => {
  await core?.close();
  await inst?.cleanup();
  core = inst = undefined;
});

describe('restored rate-limit counters', () => {
  it('a counter saved "in the future" (clock went back, or an edited file) waits at most one period', async () => {
    inst = await makeInstallation({ policies: { 'acme.yaml': 'team: acme\nservers: {}\n' } });
    await mkdir(inst.stateDir, { recursive: true });
    await writeFile(
      path.join(inst.stateDir, 'ratelimits.json'),
      JSON.stringify({ [KEY]: { tokens: -1e300, updatedAt: Date.now() + 365 * 86_400_000, spec: '1/hour' } }),
    );
    core = await createCore(await loadConfig(inst.configFile), { log: silentLogger(), watch: false });
    const decision = await core.rateLimits.take('acme', 'http/http_request', HOUR);
    expect(decision.ok).toBe(false);
    expect(decision.ok === false && decision.retryAfterMs).toBeLessThanOrEqual(HOUR.periodMs + 1); // +1: rounding up
  });

  it('keeps sound counters and drops malformed ones', () => {
    const now = 1_000_000;
    const raw = JSON.parse(
      `{"a":{"tokens":0.5,"updatedAt":999000,"spec":"1/hour"},"b":{"tokens":"x","updatedAt":1,"spec":"1/hour"},` +
        `"c":null,"__proto__":{"tokens":1,"updatedAt":1,"spec":"1/hour"},"d":{"tokens":1e999,"updatedAt":1,"spec":"1/hour"}}`,
    );
    const state = sanitizeRateState(raw, now);
    expect(Object.keys(state)).toEqual(['a', '__proto__']);
    expect(state.a).toEqual({ tokens: 0.5, updatedAt: 999000, spec: '1/hour' });
    expect(sanitizeRateState([1, 2], now)).toEqual({});
  });
});
