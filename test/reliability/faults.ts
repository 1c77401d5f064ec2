// Shared by the fault tests: while one session's upstream misbehaves, another team's session keeps
// calling a healthy upstream. Every one of its calls must be answered correctly during the fault;
// its latency is printed (never asserted: the machine is shared), next to a baseline taken before.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { percentile } from '../../bench/common.js';
import type { Broker } from '../../src/broker.js';
import { fixtureGitEnv, refOf } from '../../src/demo/git-http-server.js';
import {
  acmeHttpPolicy,
  connectSocketClient,
  makeInstallation,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

export interface VictimFigures {
  /** Calls started while the fault was active; each was answered correctly. */
  calls: number;
  p50: number;
  max: number;
}

/** Calls `victim` `n` times in a row and returns the latencies in ms (a baseline). */
export async function baseline(victim: () => Promise<void>, n = 20): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await victim();
    out.push(performance.now() - t);
  }
  return out;
}

/**
 * Runs `fault` (the faulty session's calls) and, until it settles, `victim` in a loop. `victim`
 * throws (an expect) when an answer is wrong, which fails the test. Prints one line of figures.
 */
export async function victimDuringFault<T>(
  label: string,
  fault: () => Promise<T>,
  victim: () => Promise<void>,
  baselineMs: number[],
): Promise<{ value: T; figures: VictimFigures }> {
  let active = true;
  const faulted = fault().finally(() => (active = false));
  const latencies: number[] = [];
  const loop = (async () => {
    // At least one call overlaps the fault: it starts before the fault's first await returns.
    do {
      const t = performance.now();
      await victim();
      latencies.push(performance.now() - t);
    } while (active);
  })();
  const [value] = await Promise.all([faulted, loop]);
  const sorted = [...latencies].sort((a, b) => a - b);
  const base = [...baselineMs].sort((a, b) => a - b);
  const figures = { calls: latencies.length, p50: percentile(sorted, 0.5), max: sorted.at(-1)! };
  console.log(
    `[fault] ${label}: another team's ${figures.calls} calls during the fault all answered; ` +
      `p50 ${figures.p50.toFixed(1)} ms, max ${figures.max.toFixed(1)} ms ` +
      `(baseline p50 ${percentile(base, 0.5).toFixed(1)} ms, max ${base.at(-1)!.toFixed(1)} ms)`,
  );
  return { value, figures };
}

export interface FaultBroker {
  inst: Installation;
  broker: Broker;
  /** The healthy upstream team `beta` (the other team) calls. */
  healthy: EchoUpstream;
  /** One `http_request` of beta's to the healthy upstream, checked to be answered correctly. */
  victim(): Promise<void>;
  /** An MCP client on `team`'s `server` socket (closed by close()). */
  client(team: string, server: string): Promise<Client>;
  close(): Promise<void>;
}

/**
 * A broker in this process whose policies are `policies` (file name → YAML) plus team `beta`,
 * whose http server reaches a healthy echo upstream: the session that must stay unaffected.
 */
export async function startFaultBroker(opts: {
  policies: Record<string, string>;
  secrets?: Record<string, string>;
  /** Lines prepended to airlock.yaml. */
  configYaml?: string;
  /** Edits the installation before the broker starts (e.g. mounts over its state folder). */
  prepare?: (inst: Installation) => Promise<void>;
  /** Extra lines under `secrets:` in airlock.yaml (e.g. a keychain secret). */
  extraSecretsYaml?: string;
  /** Broker options (e.g. secretCacheTtlMs). */
  brokerOptions?: import('../../src/broker.js').CoreOptions;
}): Promise<FaultBroker> {
  const [{ Broker }, { loadConfig }, { silentLogger }] = await Promise.all([
    import('../../src/broker.js'),
    import('../../src/config/airlock-yaml.js'),
    import('../../src/log.js'),
  ]);
  const healthy = await startEchoUpstream();
  const inst = await makeInstallation({
    secrets: { 'api-token': 'beta-victim-token-0b9e', ...opts.secrets },
    policies: {
      ...opts.policies,
      'beta.yaml': acmeHttpPolicy(healthy.origin).replace('team: acme', 'team: beta'),
    },
    ...(opts.extraSecretsYaml ? { extraSecretsYaml: opts.extraSecretsYaml } : {}),
  });
  if (opts.configYaml)
    await writeFile(inst.configFile, opts.configYaml + (await readFile(inst.configFile, 'utf8')));
  await opts.prepare?.(inst);
  const broker = await Broker.start(await loadConfig(inst.configFile), {
    log: silentLogger(),
    ...opts.brokerOptions,
  });
  const clients: Client[] = [];
  const client = async (team: string, server: string) => {
    const { client: c } = await connectSocketClient(inst.socket(team, server));
    clients.push(c);
    return c;
  };
  const beta = await client('beta', 'http');
  return {
    inst,
    broker,
    healthy,
    client,
    async victim() {
      const r = (await beta.callTool({
        name: 'http_request',
        arguments: { method: 'GET', url: `${healthy.origin}/v1/ping` },
      })) as CallToolResult;
      expect(r.isError, JSON.stringify(r.content)).toBeFalsy();
      expect((r.structuredContent as { status: number }).status).toBe(200);
    },
    async close() {
      for (const c of clients) await c.close().catch(() => undefined);
      await broker.stop(1000);
      await healthy.close();
      await inst.cleanup();
    },
  };
}

/** Pushes a commit with `bytes` of incompressible content to `bare`'s main (so a fetch has a pack to download). */
export async function pushRemoteCommit(bare: string, bytes: number): Promise<string> {
  const seed = await mkdtemp('/tmp/al-gitseed-');
  const env = fixtureGitEnv();
  execFileSync('git', ['clone', '--quiet', bare, seed], { env });
  await writeFile(path.join(seed, `blob-${Date.now()}.bin`), randomBytes(bytes));
  execFileSync('git', ['-C', seed, 'add', '-A'], { env });
  execFileSync('git', ['-C', seed, 'commit', '--quiet', '-m', 'more'], { env });
  execFileSync('git', ['-C', seed, 'push', '--quiet', 'origin', 'HEAD:main'], { env });
  await rm(seed, { recursive: true, force: true });
  return refOf(bare, 'refs/heads/main')!;
}
