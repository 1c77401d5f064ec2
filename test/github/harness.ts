// A broker in this process with the github server, against the local GitHub API stand-in, with
// both credential kinds configured: a token secret and a githubApp secret whose RSA key the
// stand-in verifies JWTs with. Its log lines are captured (unredacted by the test's own logger),
// so a test can look for credentials in results, errors, logs and audit records alike.
import { generateKeyPairSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Broker } from '../../src/broker.js';
import { loadConfig } from '../../src/config/airlock-yaml.js';
import {
  startGithubApiStandIn,
  type GithubApiStandIn,
  type RepoState,
} from '../../src/demo/github-api/server.js';
import { sampleRepo } from '../../src/demo/github-api/data.js';
import { connectSocketClient, makeInstallation, type Installation } from '../helpers/fixture.js';

export const PAT = 'ghp_TestPersonalAccessToken0123456789abcd';
export const APP_ID = '31337';
export const INSTALLATION_ID = '4242';

export function appKeyPair(): { privateKey: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKey: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

export interface GithubBroker {
  inst: Installation;
  api: GithubApiStandIn;
  broker: Broker;
  privateKey: string;
  logLines: string[];
  /** An MCP client on `team`'s github socket (closed by close()). */
  client(team?: string): Promise<Client>;
  /** Every audit record so far. */
  audit(): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

/**
 * `policies` maps team → the lines of its github section after `servers:\n  github:\n` (the
 * harness adds `apiUrl`). Secrets: `gh-token` (PAT), `gh-app` (App, key file app.pem).
 */
export async function startGithubBroker(opts: {
  policies: Record<string, string>;
  repos?: RepoState[];
  /** Replaces the App private key file's contents (e.g. a malformed key). */
  keyFileContents?: string;
}): Promise<GithubBroker> {
  const keys = appKeyPair();
  const repos = opts.repos ?? [
    sampleRepo('acme', 'payments-api', 101),
    sampleRepo('acme', 'ledger', 102),
    sampleRepo('other', 'secret-stuff', 103),
  ];
  const api = await startGithubApiStandIn({
    tokens: [PAT],
    app: {
      appId: APP_ID,
      installationId: INSTALLATION_ID,
      publicKey: keys.publicKey,
      repositories: ['acme/payments-api', 'acme/ledger'],
      permissions: { contents: 'write', issues: 'write', pull_requests: 'write', metadata: 'read' },
    },
    repos,
  });
  const policies: Record<string, string> = {};
  for (const [team, section] of Object.entries(opts.policies)) {
    policies[`${team}.yaml`] = `team: ${team}\nservers:\n  github:\n    apiUrl: ${api.apiUrl}\n${section}`;
  }
  const inst = await makeInstallation({
    secrets: { 'gh-token': PAT },
    policies,
    extraSecretsYaml: `  gh-app:\n    githubApp: { appId: ${APP_ID}, installationId: ${INSTALLATION_ID}, privateKey: { file: ./secrets/app.pem } }`,
  });
  await writeFile(path.join(inst.root, 'secrets', 'app.pem'), opts.keyFileContents ?? keys.privateKey, {
    mode: 0o600,
  });
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  const broker = await Broker.start(await loadConfig(inst.configFile), { log });
  const clients: Client[] = [];
  return {
    inst,
    api,
    broker,
    privateKey: keys.privateKey,
    logLines,
    async client(team = Object.keys(opts.policies)[0]!) {
      const { client } = await connectSocketClient(inst.socket(team, 'github'));
      clients.push(client);
      return client;
    },
    async audit() {
      const text = await readFile(inst.auditFile, 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async close() {
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
      await broker.stop(1000);
      await api.close();
      await inst.cleanup();
    },
  };
}

export const textOf = (r: CallToolResult): string => (r.content[0] as { text: string }).text;

export async function call(
  client: Client,
  name: string,
  args: Record<string, unknown>,
): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

/** The PEM body lines of a private key (each is registered for redaction; none may appear anywhere). */
export function pemBodyLines(pem: string): string[] {
  return pem.split('\n').filter((l) => l && !l.startsWith('-----'));
}

/** structuredContent as a test reads it: each tool's output schema already holds it to its shape. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- walked field by field in assertions
export type Json = any;
export const sc = (r: CallToolResult): Json => r.structuredContent;
