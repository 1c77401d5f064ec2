import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { AirlockConfig } from '../../src/config/airlock-yaml.js';

export const BASE_CONFIG = `socketDir: ./run
stateDir: ./state
policies: ./policies
audit:
  file: ./audit.jsonl
secrets:
  stripe-key: { env: STRIPE_KEY }
  anthropic-key: { keychain: anthropic-key, teams: [payments] }
  github-token: { env: GITHUB_TOKEN, teams: [payments, web] }
  pg-analytics: { file: ./pg_url }
`;

/** A temp folder with an airlock.yaml and a policies/ folder; `cleanup` removes it. */
export async function makeWorkspace(config = BASE_CONFIG): Promise<{
  dir: string;
  configFile: string;
  policies: string;
  write(name: string, text: string): Promise<string>;
  cleanup(): Promise<void>;
}> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'airlock-policy-'));
  const policies = path.join(dir, 'policies');
  await mkdir(policies);
  const configFile = path.join(dir, 'airlock.yaml');
  await writeFile(configFile, config);
  return {
    dir,
    configFile,
    policies,
    async write(name, text) {
      const file = path.join(policies, name);
      await writeFile(file, text);
      return file;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A config object without touching disk (for checks that only need secrets and the folder). */
export function configFor(policies: string, secrets: AirlockConfig['secrets']): AirlockConfig {
  return {
    file: path.join(policies, '..', 'airlock.yaml'),
    dir: path.join(policies, '..'),
    socketDir: '/tmp/none',
    stateDir: '/tmp/none',
    policies,
    audit: { file: '/tmp/none/audit.jsonl' },
    secrets,
    socketGroups: {},
    sessions: { maxPerTeam: 256, maxTotal: 1024 },
  };
}

/** Issues as `line:col: message` strings (file dropped) for compact assertions. */
export function brief(issues: { line: number; col: number; message: string }[]): string[] {
  return issues.map((i) => `${i.line}:${i.col}: ${i.message}`);
}
