// The OS keychain locked, its D-Bus gone, or its D-Bus frozen (accepting and never answering),
// with a real gnome-keyring behind a real dbus-daemon: team acme's http credential lives in the
// keychain, team beta's in a file. acme's calls get "credential unavailable (ask the operator)"
// naming the secret only, with the cause in its audit record; beta is answered throughout (latency
// printed); once the keychain is unlocked or the bus is back, acme's calls work again without a
// broker restart. Secrets are read on every call here (cache TTL 0), so each fault is met at once.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { osKeychain, KEYCHAIN_TIMEOUT_MS } from '../../src/secrets/keychain.js';
import { acmeHttpPolicy, startEchoUpstream, type EchoUpstream } from '../helpers/fixture.js';
import { startKeyringControl, type KeyringControl } from './keyring-control.js';
import { baseline, startFaultBroker, victimDuringFault, type FaultBroker } from './faults.js';

const TOKEN = 'acme-keychain-token-5c1f9e2a';
const UNAVAILABLE = 'error: credential "acme-kc" is unavailable (ask the operator)';

describe('keychain faults', () => {
  let kc: KeyringControl;
  let fb: FaultBroker;
  let acmeUpstream: EchoUpstream;
  let acme: Client;
  let baselineMs: number[];
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;
  const victim = () => fb.victim();

  beforeAll(async () => {
    kc = await startKeyringControl();
    process.env.DBUS_SESSION_BUS_ADDRESS = kc.busAddress;
    await osKeychain.set('acme-kc', TOKEN);
    acmeUpstream = await startEchoUpstream();
    fb = await startFaultBroker({
      extraSecretsYaml: '  acme-kc: { keychain: acme-kc }',
      policies: {
        'acme.yaml': acmeHttpPolicy(acmeUpstream.origin).replace('secret:api-token', 'secret:acme-kc'),
      },
      brokerOptions: { secretCacheTtlMs: 0 },
    });
    acme = await fb.client('acme', 'http');
    baselineMs = await baseline(victim);
  }, 60_000);

  afterAll(async () => {
    await fb?.close();
    await acmeUpstream?.close();
    await kc?.close();
    if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
  });

  async function acmeCall(): Promise<{ isError: boolean; text: string; raw: string }> {
    const r = (await acme.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${acmeUpstream.origin}/v1/orders` },
    })) as CallToolResult;
    return {
      isError: r.isError === true,
      text: (r.content[0] as { text: string }).text,
      raw: JSON.stringify(r),
    };
  }

  /** The call failed with the name only: no keyring, bus, path or library detail reaches the agent. */
  async function expectUnavailable(call: { isError: boolean; text: string; raw: string }, detail: RegExp) {
    expect(call.isError).toBe(true);
    expect(call.text).toBe(UNAVAILABLE);
    for (const hostDetail of [kc.busAddress, 'D-Bus', 'keyring', 'Secret Service', 'gnome', '/tmp', TOKEN])
      expect(call.raw).not.toContain(hostDetail);
    // The last result of acme's (beta's calls and checkpoints interleave).
    const record = (await readFile(fb.inst.auditFile, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { team?: string; phase: string; error?: string; errorDetail?: string })
      .filter((r) => r.team === 'acme' && r.phase === 'result')
      .at(-1)!;
    expect(record).toMatchObject({ phase: 'result', error: UNAVAILABLE.slice('error: '.length) });
    expect(record.errorDetail).toMatch(detail);
  }

  async function expectServed(): Promise<void> {
    const before = acmeUpstream.requests.length;
    const ok = await acmeCall();
    expect(ok.isError, ok.text).toBe(false);
    expect(acmeUpstream.requests.length).toBe(before + 1);
    expect(acmeUpstream.requests.at(-1)!.headers.authorization).toBe(`Bearer ${TOKEN}`);
  }

  it('serves the keychain credential while the keychain is healthy', async () => {
    await expectServed();
  });

  it('locked: the caller is told the credential is unavailable, beta is answered, unlocking resumes', async () => {
    const { value } = await victimDuringFault(
      'keychain locked',
      async () => {
        await kc.lock();
        const during = [await acmeCall(), await acmeCall()];
        await kc.unlock();
        return during;
      },
      victim,
      baselineMs,
    );
    for (const call of value) await expectUnavailable(call, /the keyring is locked/);
    await expectServed();
  }, 60_000);

  it('D-Bus gone: the caller is told the credential is unavailable, beta is answered, the bus coming back resumes', async () => {
    const { value } = await victimDuringFault(
      'keychain D-Bus gone',
      async () => {
        await kc.stopBus();
        const during = [await acmeCall(), await acmeCall()];
        await kc.startBus();
        return during;
      },
      victim,
      baselineMs,
    );
    for (const call of value) await expectUnavailable(call, /no D-Bus session bus/);
    await expectServed();
  }, 60_000);

  it('D-Bus frozen (never answers): the call fails after the keychain timeout without stalling beta; thawed, it resumes', async () => {
    const { value } = await victimDuringFault(
      'keychain D-Bus frozen',
      async () => {
        kc.freezeBus();
        const t = performance.now();
        const during = await acmeCall();
        const waited = performance.now() - t;
        kc.thawBus();
        return { during, waited };
      },
      victim,
      baselineMs,
    );
    expect(value.waited).toBeGreaterThanOrEqual(KEYCHAIN_TIMEOUT_MS - 100);
    await expectUnavailable(value.during, /did not answer within/);
    await expectServed();
  }, 60_000);
});
