// Load across every server and the model socket: N sessions (default 100) spread over two teams
// and five sockets (http, git, github, postgres, model) call for a bounded time, mixing allowed
// and denied calls, against local upstreams in this process (the broker is its own process).
// It prints p50/p99 per tool, counts protocol errors and unanswered calls, and compares the
// broker's RSS and open file descriptors after a first and a second identical run (a leak shows
// as growth between the two).
//
//   npm run build && node dist/bench/load.js [--seconds 30] [--sessions 100] [--no-postgres]
import { readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { brokerMemory, percentile, RawMcpSession, startServe, stopServe } from './harness.js';
import { startModelApi, startOrdersApi } from '../src/demo/upstreams.js';
import { startGithubDemo } from '../src/demo/github-part.js';
import { createBareRepo, startSmartHttpServer } from '../src/demo/git-http-server.js';
import { startPostgresCluster, type PostgresCluster } from '../src/demo/postgres-cluster.js';

const TEAMS = ['alpha', 'beta'] as const;
const GIT_USER = 'x-access-token';

type Outcome = 'ok' | 'denied' | 'protocol-error';
interface Sample {
  tool: string;
  ms: number;
  outcome: Outcome;
  expected: 'ok' | 'denied';
}

/** One kind of call a session makes: the label it is reported under, and what it should give. */
interface CallKind {
  label: string;
  expected: 'ok' | 'denied';
  run(): Promise<Outcome>;
}

function mcpCall(session: RawMcpSession, name: string, args: Record<string, unknown>) {
  return async (): Promise<Outcome> => {
    try {
      const r = (await session.request('tools/call', { name, arguments: args })) as { isError?: boolean };
      return r.isError ? 'denied' : 'ok';
    } catch {
      return 'protocol-error';
    }
  };
}

function modelCall(socketPath: string, urlPath: string) {
  const body = JSON.stringify({
    model: 'claude-bench',
    max_tokens: 16,
    messages: [{ role: 'user', content: 'hi' }],
  });
  return () =>
    new Promise<Outcome>((resolve) => {
      const req = http.request(
        { socketPath, path: urlPath, method: 'POST', headers: { 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          res.on('end', () =>
            resolve(res.statusCode === 200 ? 'ok' : res.statusCode === 403 ? 'denied' : 'protocol-error'),
          );
        },
      );
      req.on('error', () => resolve('protocol-error'));
      req.end(body);
    });
}

export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export interface LoadOptions {
  seconds: number;
  sessions: number;
  withPostgres: boolean;
  /** Session bound per team (default: `sessions`); bench/soak.ts opens thousands of idle ones. */
  maxSessionsPerTeam?: number;
}

export interface RunFigures {
  protocolErrors: number;
  unexpected: number;
  calls: number;
  rss: number;
  fds: number;
}

/** The broker, its upstreams and one round of the load mix; reused by bench/soak.ts. */
export interface LoadRig {
  broker: ChildProcess;
  /** Path of `team`'s socket for `server`. */
  socket(team: string, server: string): string;
  /** One round of the mix (prints its table); figures measured after its sessions closed. */
  run(n: number): Promise<RunFigures>;
  /** Checks that beta neither sees nor can call alpha's git_log (sets exitCode 1 if it does). */
  isolation(): Promise<void>;
  close(): Promise<void>;
}

export async function startLoadRig(opts: LoadOptions): Promise<LoadRig> {
  const SECONDS = opts.seconds;
  const SESSIONS = opts.sessions;
  const WITH_POSTGRES = opts.withPostgres;
  const root = await mkdtemp(path.join(os.tmpdir(), 'al-load-'));
  const cleanups: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  };
  try {
    const secret = (name: string) => `${name}-bench-secret-${Math.random().toString(36).slice(2, 12)}`;
    const keys = {
      orders: secret('orders'),
      model: secret('model'),
      git: secret('git'),
      github: secret('github'),
    };
    const orders = await startOrdersApi(keys.orders);
    cleanups.push(() => orders.close());
    const model = await startModelApi(keys.model);
    cleanups.push(() => model.close());
    const github = await startGithubDemo(keys.github);
    cleanups.push(() => github.close());
    const repos = path.join(root, 'remote');
    await mkdir(repos, { recursive: true });
    await createBareRepo(repos, 'app.git', { branch: 'main', files: { 'README.md': '# app\n' } });
    const gitServer = await startSmartHttpServer({ root: repos, username: GIT_USER, password: keys.git });
    cleanups.push(() => gitServer.close());
    let pg: PostgresCluster | undefined;
    if (WITH_POSTGRES) {
      pg = await startPostgresCluster();
      cleanups.push(() => pg!.close());
      await pg.admin(`CREATE DATABASE shop`);
      await pg.admin(
        `CREATE ROLE bench_ro LOGIN PASSWORD 'bench-ro-pw';
         CREATE TABLE items (id int primary key, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;
         GRANT SELECT ON items TO bench_ro;`,
        'shop',
      );
    }

    await mkdir(path.join(root, 'secrets'), { recursive: true, mode: 0o700 });
    await mkdir(path.join(root, 'policies'));
    const secretFiles: Record<string, string> = {
      'orders-key': keys.orders,
      'model-key': keys.model,
      'git-token': keys.git,
      'github-token': keys.github,
      ...(pg ? { 'pg-shop': pg.url({ user: 'bench_ro', password: 'bench-ro-pw', database: 'shop' }) } : {}),
    };
    for (const [name, value] of Object.entries(secretFiles))
      await writeFile(path.join(root, 'secrets', name), value + '\n', { mode: 0o600 });
    const configFile = path.join(root, 'airlock.yaml');
    await writeFile(
      configFile,
      [
        `socketDir: ${root}/run`,
        `stateDir: ${root}/state`,
        'policies: ./policies',
        'audit:',
        `  file: ${root}/audit/audit.jsonl`,
        // Room for the bench's sessions (the default bounds are lower).
        `sessions: { maxPerTeam: ${opts.maxSessionsPerTeam ?? SESSIONS}, maxTotal: ${(opts.maxSessionsPerTeam ?? SESSIONS) * 2} }`,
        'secrets:',
        ...Object.keys(secretFiles).map((n) => `  ${n}: { file: ./secrets/${n} }`),
        '',
      ].join('\n'),
    );
    for (const team of TEAMS) {
      const workTree = path.join(root, 'work', team);
      await mkdir(workTree, { recursive: true });
      await writeFile(
        path.join(root, 'policies', `${team}.yaml`),
        `team: ${team}
servers:
  http:
    hosts:
      - origin: ${orders.origin}
        methods: [GET]
        paths: ["/v1/orders", "/v1/orders/*"]
        inject: { header: Authorization, value: "Bearer \${secret:orders-key}" }
        allowPrivateAddress: true
    tools:
      http_request: {}
  git:
    workspaces:
      app: { path: ${workTree}, remote: ${gitServer.repoUrl('app.git')}, credential: git-token, credentialUser: ${GIT_USER} }
    tools:
      git_status: {}
${team === 'alpha' ? '      git_log: {}\n' : ''}${github.policy}${
          pg
            ? `  postgres:
    databases:
      shop: { connection: pg-shop, access: read-only }
    tools:
      query: {}
`
            : ''
        }  model:
    upstream: ${model.origin}
    credential: model-key
    paths: ["/v1/messages"]
    dailyTokenBudget: 1000000000
    allowPrivateAddress: true
`,
      );
    }

    const socket = (team: string, server: string) => path.join(root, 'run', team, `${server}.sock`);
    const servers = ['http', 'git', 'github', ...(pg ? ['postgres'] : []), 'model'];
    const broker = await startServe(configFile, socket('beta', 'model'));
    cleanups.push(() => stopServe(broker));
    // The first git call clones; do it once per team before measuring. Only alpha lists git_log:
    // beta's sessions must neither see it nor be able to call it.
    const isolation = async () => {
      for (const team of TEAMS) {
        const s = await RawMcpSession.open(socket(team, 'git'));
        const listed = ((await s.request('tools/list', {})) as { tools: Array<{ name: string }> }).tools
          .map((t) => t.name)
          .sort()
          .join(',');
        const log = await mcpCall(s, 'git_log', { workspace: 'app' })();
        s.close();
        const want = team === 'alpha' ? ['git_log,git_status', 'ok'] : ['git_status', 'denied'];
        if (listed !== want[0] || log !== want[1]) {
          console.log(`team isolation broken: ${team} lists ${listed}, git_log ${log}`);
          process.exitCode = 1;
        }
      }
    };

    const kindsFor = async (team: string, server: string): Promise<{ kinds: CallKind[]; close(): void }> => {
      if (server === 'model') {
        const sock = socket(team, 'model');
        return {
          kinds: [
            { label: 'model POST /v1/messages', expected: 'ok', run: modelCall(sock, '/v1/messages') },
            {
              label: 'model POST /v1/complete (denied)',
              expected: 'denied',
              run: modelCall(sock, '/v1/complete'),
            },
          ],
          close: () => undefined,
        };
      }
      const s = await RawMcpSession.open(socket(team, server));
      const k = (label: string, expected: 'ok' | 'denied', name: string, args: Record<string, unknown>) => ({
        label,
        expected,
        run: mcpCall(s, name, args),
      });
      const byServer: Record<string, CallKind[]> = {
        http: [
          k('http_request GET', 'ok', 'http_request', { method: 'GET', url: `${orders.origin}/v1/orders` }),
          k('http_request DELETE (denied)', 'denied', 'http_request', {
            method: 'DELETE',
            url: `${orders.origin}/v1/orders/1`,
          }),
        ],
        git: [
          k('git_status', 'ok', 'git_status', { workspace: 'app' }),
          k('git_push (denied: not in policy)', 'denied', 'git_push', { workspace: 'app', branch: 'main' }),
        ],
        github: [
          k('get_issue', 'ok', 'get_issue', { owner: 'acme', repo: 'payments-api', number: 1 }),
          k('get_issue other repo (denied)', 'denied', 'get_issue', {
            owner: 'acme',
            repo: 'other',
            number: 1,
          }),
        ],
        postgres: [
          k('query SELECT', 'ok', 'query', {
            database: 'shop',
            sql: 'SELECT id, name FROM items WHERE id < 20',
          }),
          k('query DELETE (denied)', 'denied', 'query', {
            database: 'shop',
            sql: 'DELETE FROM items WHERE id = 1',
          }),
        ],
      };
      return { kinds: byServer[server]!, close: () => s.close() };
    };

    const run = async (n: number) => {
      const pairs = TEAMS.flatMap((team) => servers.map((server) => ({ team, server })));
      const sessions = await Promise.all(
        Array.from({ length: SESSIONS }, (_, i) =>
          kindsFor(pairs[i % pairs.length]!.team, pairs[i % pairs.length]!.server),
        ),
      );
      const samples: Sample[] = [];
      const deadline = performance.now() + SECONDS * 1000;
      await Promise.all(
        sessions.map(async ({ kinds }) => {
          for (let i = 0; performance.now() < deadline; i++) {
            // Three allowed calls to one denied.
            const kind = kinds[i % 4 === 3 ? 1 : 0]!;
            const t = performance.now();
            const outcome = await kind.run();
            samples.push({ tool: kind.label, ms: performance.now() - t, outcome, expected: kind.expected });
          }
        }),
      );
      for (const s of sessions) s.close();
      // Let the broker notice the closed sessions before it is measured.
      await new Promise((r) => setTimeout(r, 2000));
      const byTool = new Map<string, Sample[]>();
      for (const s of samples) byTool.set(s.tool, [...(byTool.get(s.tool) ?? []), s]);
      console.log(`\nrun ${n}: ${SESSIONS} sessions, ${SECONDS} s, ${samples.length} calls`);
      console.log(
        `${'tool'.padEnd(38)} ${'calls'.padStart(7)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}  unexpected`,
      );
      for (const [tool, list] of [...byTool].sort()) {
        const sorted = list.map((s) => s.ms).sort((a, b) => a - b);
        const unexpected = list.filter((s) => s.outcome !== s.expected).length;
        console.log(
          `${tool.padEnd(38)} ${String(list.length).padStart(7)} ${percentile(sorted, 0.5).toFixed(1).padStart(8)} ${percentile(sorted, 0.99).toFixed(1).padStart(8)}  ${unexpected}`,
        );
      }
      const protocolErrors = samples.filter((s) => s.outcome === 'protocol-error').length;
      const unexpected = samples.filter((s) => s.outcome !== s.expected).length;
      const mem = brokerMemory(broker.pid!);
      const fds = openFds(broker.pid!);
      console.log(
        `protocol errors ${protocolErrors}, unexpected outcomes ${unexpected}; broker RSS ${mem.rss} MiB, open fds ${fds}`,
      );
      return { protocolErrors, unexpected, calls: samples.length, rss: mem.rss, fds };
    };

    return { broker, socket, run, isolation, close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '30' },
      sessions: { type: 'string', default: '100' },
      'no-postgres': { type: 'boolean', default: false },
    },
  });
  const rig = await startLoadRig({
    seconds: Number(values.seconds),
    sessions: Number(values.sessions),
    withPostgres: !values['no-postgres'],
  });
  const { broker } = rig;
  try {
    await rig.isolation();
    const before = { rss: brokerMemory(broker.pid!).rss, fds: openFds(broker.pid!) };
    console.log(`broker at start: RSS ${before.rss} MiB, open fds ${before.fds}`);
    const first = await rig.run(1);
    const second = await rig.run(2);
    await rig.isolation();
    console.log(
      `\nafter run 1 → after run 2: RSS ${first.rss} → ${second.rss} MiB (${second.rss - first.rss >= 0 ? '+' : ''}${second.rss - first.rss}), open fds ${first.fds} → ${second.fds} (${second.fds - first.fds >= 0 ? '+' : ''}${second.fds - first.fds})`,
    );
    if (first.protocolErrors + second.protocolErrors + first.unexpected + second.unexpected > 0)
      process.exitCode = 1;
  } finally {
    await rig.close();
  }
}

// Run when started as a script, not when bench/soak.ts imports the rig.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
