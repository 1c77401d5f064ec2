// `npm run demo` as a user runs it: the built entry point, start to finish, in the sandbox; the
// unboxed fallback clearly labelled; and Ctrl-C cleaning up.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Redactor } from '../../src/secrets/redact.js';
import { REPO_ROOT } from '../helpers/fixture.js';

const DEMO = path.join(REPO_ROOT, 'dist/src/demo/index.js');
// Given to the demo instead of its random values, so the output can be searched for them.
const API_KEY = 'sk_demo_testKey_5b1f0e9d8c7a6b5c4d3e';
const GIT_TOKEN = 'ghp_demo_testToken_0a1b2c3d4e5f6a7b8c';
const MODEL_KEY = 'sk-ant-demo-testKey-9f8e7d6c5b4a3f2e1d';
const GITHUB_TOKEN = 'ghp_demo_githubToken_5e6f7a8b9c0d1e2f3a';

interface DemoRun {
  code: number | null;
  output: string;
}

function runDemo(
  env: Record<string, string> = {},
  onOutput?: (text: string, pid: number) => void,
): Promise<DemoRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DEMO], {
      env: {
        ...process.env,
        AIRLOCK_DEMO_API_KEY: API_KEY,
        AIRLOCK_DEMO_GIT_TOKEN: GIT_TOKEN,
        AIRLOCK_DEMO_MODEL_KEY: MODEL_KEY,
        AIRLOCK_DEMO_GITHUB_TOKEN: GITHUB_TOKEN,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const collect = (d: string) => {
      output += d;
      onOutput?.(output, child.pid!);
    };
    child.stdout.setEncoding('utf8').on('data', collect);
    child.stderr.setEncoding('utf8').on('data', collect);
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

function tempRootOf(output: string): string {
  const m = /airlock serve --config (\S+)\/airlock\.yaml/.exec(output);
  expect(m, output).not.toBeNull();
  return m![1]!;
}

/** Command lines that mention `text` (a leftover `airlock serve` or bridge of a demo run). */
function processesMentioning(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(text)) found.push(`${entry}: ${cmdline.replace(/\0/g, ' ')}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

const secrets = new Redactor();
secrets.add(API_KEY);
secrets.add(GIT_TOKEN);
secrets.add(MODEL_KEY);
secrets.add(GITHUB_TOKEN);

describe('npm run demo', () => {
  it('runs the sandboxed session: allowed and denied calls, a verified audit chain, no secret in sight', async () => {
    const { code, output } = await runDemo();
    expect(code, output).toBe(0);
    expect(output).toContain('the agent runs in its own network namespace');
    expect(output).not.toContain('NO SANDBOX');
    expect(output).toMatch(
      /✓ boundary TCP to the orders API at 127\.0\.0\.1:\d+ → (ECONNREFUSED|ENETUNREACH)/,
    );
    expect(output).toMatch(/✓ allowed\s+model: POST \/v1\/messages → 200/);
    expect(output).toMatch(/✓ denied\s+model: GET \/v1\/models .*\n\s+→ denied: model\.paths/);
    expect(output).toMatch(/✓ allowed\s+GET http:\/\/127\.0\.0\.1:\d+\/v1\/orders → 200/);
    expect(output).toMatch(/✓ denied\s+DELETE .*\n\s+→ denied: http\.hosts\[0\]\.methods/);
    expect(output).toMatch(
      /✓ denied\s+POST https:\/\/attacker\.example\/collect .*\n\s+→ denied: http\.hosts: no policy entry/,
    );
    expect(output).toMatch(/✓ allowed\s+git_push agent\/demo → pushed/);
    expect(output).toMatch(/✓ denied\s+git_push main .*\n\s+→ denied: git\.tools\.git_push\.branches/);
    expect(output).toMatch(/✓ denied\s+git_pull .*\n\s+→ denied: git\.tools: tool "git_pull" is not enabled/);
    expect(output).toMatch(
      /✓ allowed\s+get_issue #1 \(hidden Unicode in its body\)\n\s+→ body by @drive-by-user \(NONE, no write access\), \d+ hidden characters removed/,
    );
    expect(output).toMatch(/✓ allowed\s+create_pull_request agent\/fix-export → develop → opened #\d+/);
    expect(output).toMatch(
      /✓ denied\s+create_pull_request agent\/fix-export → main .*\n\s+→ denied: github\.tools\.create_pull_request\.base/,
    );
    expect(output).not.toContain('✗');
    expect(output).toMatch(/SEQ\s+TIME\s+TEAM\s+SERVER\s+TOOL/);
    expect(output).toMatch(/ok: \d+ records, chain intact/);
    expect(output).toMatch(/✓ Done: \d+ allowed and \d+ denied calls/);
    // The values the broker injected appear nowhere in the output, in any encoding.
    expect(secrets.contains(output)).toBe(false);
    expect(existsSync(tempRootOf(output))).toBe(false);
  }, 120_000);

  it('without the boundary it says so and still shows policy, injection and audit', async () => {
    const { code, output } = await runDemo({ AIRLOCK_DEMO_NO_SANDBOX: '1' });
    expect(code, output).toBe(0);
    expect(output).toContain('!! NO SANDBOX: AIRLOCK_DEMO_NO_SANDBOX=1 was set.');
    expect(output).toContain('runs WITHOUT the boundary');
    expect(output).toContain('✓ Done (WITHOUT the sandbox)');
    expect(output).toMatch(/ok: \d+ records, chain intact/);
    expect(secrets.contains(output)).toBe(false);
    expect(existsSync(tempRootOf(output))).toBe(false);
  }, 120_000);

  // Once while the upstreams are being set up, once while the agent session runs.
  it.each([
    ['setting up', 'Sandbox '],
    ['in the agent session', '(0660, group'],
  ])(
    'cleans up on Ctrl-C (%s): airlock serve stopped, temp folder removed, exit 130',
    async (_when, marker) => {
      let interrupted = false;
      const { code, output } = await runDemo({}, (text, pid) => {
        if (!interrupted && text.includes(marker)) {
          interrupted = true;
          process.kill(pid, 'SIGINT');
        }
      });
      expect(interrupted).toBe(true);
      expect(code, output).toBe(130);
      expect(output).toContain('SIGINT: stopping');
      const removed = /removed (\/\S+)\.\n/.exec(output);
      expect(removed, output).not.toBeNull();
      const root = removed![1]!;
      expect(root).toMatch(/airlock-demo-/);
      expect(existsSync(root)).toBe(false);
      expect(processesMentioning(root)).toEqual([]);
    },
    120_000,
  );
});
