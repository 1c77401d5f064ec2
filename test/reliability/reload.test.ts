// Hot reload under load: 50 sessions call the http tool while team acme's policy flips between
// two versions. Version A allows /v1/a/** through its first host entry and injects
// `X-Policy-Version: A`; version B allows /v1/b/** through its second entry and injects `B`.
// So each call shows which version decided it (allowed path and audited rule) and which version
// the handler used (the injected header the upstream received): the two must always agree.
// A broken file changes nothing; removing a team's policy closes its socket and sessions while
// another team's sessions carry on.
import { readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Broker } from '../../src/broker.js';
import {
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

type Version = 'A' | 'B';

const policyOf = (team: string, origin: string, version: Version) => {
  const entry = (paths: string) => `      - origin: ${origin}
        methods: [GET]
        paths: ["${paths}"]
        inject: { header: X-Policy-Version, value: "${version}" }
        allowPrivateAddress: true
`;
  // B's allowing entry is the second, so the audited rule names the version too.
  const hosts =
    version === 'A'
      ? entry('/v1/a/**')
      : `      - origin: http://127.0.0.1:9
        allowPrivateAddress: true
${entry('/v1/b/**')}`;
  return `team: ${team}
servers:
  http:
    hosts:
${hosts}    tools:
      http_request: {}
`;
};

interface Observed {
  marker: string;
  path: 'a' | 'b';
  allowed: boolean;
  /** The version the client knew to be in force for the whole call, if no reload overlapped it. */
  inForce: Version | undefined;
}

describe('policy reload under load', () => {
  let inst: Installation;
  let upstream: EchoUpstream;
  let broker: Broker;

  beforeAll(async () => {
    upstream = await startEchoUpstream();
    inst = await makeInstallation({
      policies: {
        'acme.yaml': policyOf('acme', upstream.origin, 'A'),
        'beta.yaml': policyOf('beta', upstream.origin, 'A'),
      },
    });
    const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
      import('../../src/broker.js'),
      import('../../src/config/airlock-yaml.js'),
      import('../../src/log.js'),
    ]);
    // No file watcher: the test decides exactly when each reload happens.
    broker = await Broker.start(await loadConfig(inst.configFile), { log: silentLogger(), watch: false });
  });
  afterAll(async () => {
    await broker?.stop(1000);
    await upstream?.close();
    await inst?.cleanup();
  });

  /** Calls GET /v1/<path>/<marker> and reports what the client saw. */
  const call = async (client: Client, team: string, path: 'a' | 'b', marker: string) => {
    const r = await client.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${upstream.origin}/v1/${path}/${team}-${marker}` },
    });
    if (r.isError) {
      expect((r.content as Array<{ text: string }>)[0]!.text).toMatch(/^denied: /);
      return { allowed: false };
    }
    const echoed = JSON.parse((r.structuredContent as { body: string }).body) as {
      headers: Record<string, string>;
    };
    return { allowed: true, header: echoed.headers['x-policy-version'] };
  };

  it('decides every call of 50 sessions wholly under the old or the new policy; a broken file changes nothing', async () => {
    const sessions = await Promise.all(
      Array.from({ length: 50 }, () => connectSocketClient(inst.socket('acme', 'http'))),
    );
    let version: Version = 'A';
    /** Bumped at the start and end of every reload; odd while one is under way. */
    let epoch = 0;
    let running = true;
    const observed: Observed[] = [];
    const load = sessions.map(async ({ client }, s) => {
      for (let n = 0; running; n++) {
        const path = n % 2 === 0 ? 'a' : 'b';
        const marker = `s${s}-n${n}`;
        const before = epoch;
        const seenVersion = version;
        const r = await call(client, 'acme', path, marker);
        const inForce = before === epoch && before % 2 === 0 ? seenVersion : undefined;
        // Allowed only where that path's version decided, and injected by the same version.
        if (r.allowed) expect(r.header).toBe(path === 'a' ? 'A' : 'B');
        observed.push({ marker, path, allowed: r.allowed, inForce });
      }
    });
    const reloadTo = async (text: string, next: Version) => {
      epoch++;
      await inst.writePolicy('acme.yaml', text);
      await broker.reload();
      version = next;
      epoch++;
      await new Promise((r) => setTimeout(r, 40));
    };
    for (let i = 0; i < 16; i++) {
      const next: Version = version === 'A' ? 'B' : 'A';
      await reloadTo(policyOf('acme', upstream.origin, next), next);
      if (i % 4 === 3) {
        // A broken file (bad YAML, then a schema error) keeps the version in force.
        await reloadTo('team: acme\nservers: [unclosed\n', version);
        await reloadTo(`team: acme\nservers:\n  http:\n    hosts: 7\n`, version);
      }
    }
    running = false;
    await Promise.all(load);
    for (const { client } of sessions) await client.close();

    // Calls that no reload overlapped were decided under the version the client knew in force.
    for (const o of observed.filter((x) => x.inForce)) {
      expect({ ...o, allowed: o.allowed }).toEqual({
        ...o,
        allowed: (o.path === 'a') === (o.inForce === 'A'),
      });
    }
    // Both versions allowed and denied calls while the load ran.
    for (const path of ['a', 'b'] as const) {
      expect(observed.some((o) => o.path === path && o.allowed)).toBe(true);
      expect(observed.some((o) => o.path === path && !o.allowed)).toBe(true);
    }
    expect(observed.filter((o) => o.inForce === undefined).length).toBeGreaterThan(0);

    // The audit agrees: an allowed call's rule names the version that allowed its path, and the
    // upstream received that version's header.
    const records = (await readFile(inst.auditFile, 'utf8'))
      .trim()
      .split('\n')
      .map(
        (l) => JSON.parse(l) as { phase: string; decision?: string; rule?: string; args?: { url?: string } },
      );
    const allowedRequests = records.filter((r) => r.phase === 'request' && r.args?.url?.includes('/acme-'));
    expect(allowedRequests.length).toBe(observed.filter((o) => o.allowed).length);
    for (const r of allowedRequests) {
      const path = r.args!.url!.includes('/v1/a/') ? 'a' : 'b';
      expect([path, r.rule]).toEqual([path, path === 'a' ? 'http.hosts[0]' : 'http.hosts[1]']);
    }
    for (const req of upstream.requests.filter((q) => q.url.includes('/acme-'))) {
      expect([req.url, req.headers['x-policy-version']]).toEqual([
        req.url,
        req.url.startsWith('/v1/a/') ? 'A' : 'B',
      ]);
    }
    expect(upstream.requests.filter((q) => q.url.includes('/acme-')).length).toBe(allowedRequests.length);
  }, 120_000);

  it("removing a team's policy closes its socket and sessions; another team carries on", async () => {
    const acme = await Promise.all(
      Array.from({ length: 5 }, () => connectSocketClient(inst.socket('acme', 'http'))),
    );
    const closed = acme.map(
      ({ client }) =>
        new Promise<void>((resolve) => {
          client.onclose = () => resolve();
        }),
    );
    const { client: beta } = await connectSocketClient(inst.socket('beta', 'http'));
    let betaCalls = 0;
    let running = true;
    const betaLoad = (async () => {
      while (running) {
        expect(await call(beta, 'beta', 'a', `n${betaCalls}`)).toMatchObject({ allowed: true });
        betaCalls++;
      }
    })();
    // An acme call in flight when the policy goes.
    const inFlight = call(acme[0]!.client, 'acme', 'a', 'last').catch((err: Error) => err);

    await rm(`${inst.policiesDir}/acme.yaml`);
    await broker.reload();
    await Promise.all(closed);
    expect(existsSync(inst.socket('acme', 'http'))).toBe(false);
    await expect(connectSocketClient(inst.socket('acme', 'http'))).rejects.toThrow(/ENOENT/);
    const last = await inFlight;
    // It either finished before the session closed or ended with the session; it never hangs.
    expect(last instanceof Error ? last.message : 'answered').toMatch(/answered|closed/i);
    const betaBefore = betaCalls;
    await new Promise((r) => setTimeout(r, 200));
    running = false;
    await betaLoad;
    expect(betaCalls).toBeGreaterThan(betaBefore);
    await beta.close();
  }, 60_000);
});
