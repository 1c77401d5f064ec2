// `airlock init [--dir D] [--team T]`: a working starting point in one folder — airlock.yaml, a
// commented team policy (with the `$schema` line editors use, and the schema beside it), and the
// folders serve uses, each with the mode serve expects. Nothing that exists is overwritten.
import { chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CommandContext } from '../cli.js';
import { UserError } from '../broker.js';
import { policyJsonSchema, TEAM_NAME_RE } from '../policy/team-policy.js';
import { SERVERS } from '../servers.js';

/** Unix socket paths are limited to 108 bytes (107 and the NUL). */
const MAX_SOCKET_PATH = 107;

function configText(): string {
  return `# Airlock operator config (one per host). Relative paths resolve against this file's folder;
# environment variables are never expanded. \`airlock init\` keeps everything in this folder so it
# runs without root; on a server use /run/airlock, /var/lib/airlock and /var/log/airlock/audit.jsonl
# (docker/airlock.service creates those).
socketDir: ./run # sockets at <socketDir>/<team>/<server>.sock
# socketGroup: 1000 # group (name or gid) given to the sockets, so the agent's uid can connect
stateDir: ./state # host-owned state (git dirs, rate-limit counters), mode 700
policies: ./policies # one file per team
audit:
  file: ./audit/audit.jsonl # hash-chained, fsynced; check it with airlock audit verify
secrets: # named secrets; policies reference them by name, never by value
  # github-token: { env: GITHUB_TOKEN, teams: [my-team] } # only these teams may use it
  # stripe-key: { file: /run/secrets/stripe_key } # a file readable by the broker only (0600)
  # anthropic-key: { keychain: anthropic-key } # OS keychain: printf %s "$KEY" | airlock secrets set anthropic-key
  {}
`;
}

function policyText(team: string): string {
  return `# yaml-language-server: $schema=schema.json
# (schema.json is \`airlock policy schema\`; regenerate it after upgrading Airlock)
# A tool this file does not list does not exist for the team. Check it: airlock policy check
team: ${team}
servers:
  http:
    hosts:
      - origin: https://api.github.com
        methods: [GET]
        # \`*\` stays within one path segment, \`**\` crosses them, \`?\` is one character.
        paths: ['/repos/**']
        # Add a credential the agent never sees (define the secret in airlock.yaml first):
        # inject: { header: Authorization, value: 'Bearer \${secret:github-token}' }
    tools:
      http_request: { rateLimit: 60/minute }
  # git:
  #   workspaces:
  #     app: # the name the agent uses
  #       path: /srv/agents/${team}/app # the work tree mounted into the sandbox (chown 1000:1000, chmod 2775)
  #       remote: https://github.com/acme/app.git
  #       credential: github-token
  #       branch: main
  #   tools:
  #     git_status: {}
  #     git_diff: {}
  #     git_commit: {}
  #     git_push: { branches: ['agent/*'] }
`;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

export async function initMain(ctx: CommandContext): Promise<number> {
  const dirArg = ctx.values.dir;
  const dir = path.resolve(typeof dirArg === 'string' ? dirArg : '.');
  const teamArg = ctx.values.team;
  const team = typeof teamArg === 'string' ? teamArg : 'my-team';
  if (!TEAM_NAME_RE.test(team)) {
    throw ctx.usageError(
      `--team "${team}": a team name is lowercase letters, digits and "-", starting with a letter or digit`,
    );
  }
  const configFile = path.join(dir, 'airlock.yaml');
  const policyFile = path.join(dir, 'policies', `${team}.yaml`);
  for (const f of [configFile, policyFile]) {
    if (await exists(f))
      throw new UserError(`${f} already exists; nothing was changed (init never overwrites)`);
  }
  const longest = path.join(dir, 'run', team, 'postgres.sock');
  if (Buffer.byteLength(longest) > MAX_SOCKET_PATH) {
    throw new UserError(
      `${dir} is too deep for Unix sockets (${longest} is over ${MAX_SOCKET_PATH} bytes); use a shorter --dir`,
    );
  }

  // Modes as serve wants them, set explicitly (mkdir's mode is cut by the umask).
  const folders: [string, number][] = [
    [dir, 0o755],
    [path.join(dir, 'policies'), 0o755],
    [path.join(dir, 'run'), 0o755],
    [path.join(dir, 'state'), 0o700],
    [path.join(dir, 'audit'), 0o700],
  ];
  for (const [folder, mode] of folders) {
    const existed = await exists(folder);
    await mkdir(folder, { recursive: true, mode });
    if (!existed) await chmod(folder, mode);
  }
  await writeFile(configFile, configText(), { flag: 'wx', mode: 0o644 });
  await writeFile(policyFile, policyText(team), { flag: 'wx', mode: 0o644 });
  const schemaFile = path.join(dir, 'policies', 'schema.json');
  await writeFile(schemaFile, JSON.stringify(policyJsonSchema(await SERVERS.all()), null, 2) + '\n', {
    mode: 0o644,
  });

  const rel = path.relative(process.cwd(), configFile);
  const config = rel === 'airlock.yaml' ? '' : ` --config ${rel.startsWith('..') ? configFile : rel}`;
  process.stdout.write(
    `created ${configFile}\ncreated ${policyFile} (team ${team})\ncreated ${schemaFile}\n` +
      `created the socket (run/), state (state/, 700) and audit (audit/, 700) folders\n\n` +
      `next:\n` +
      `  airlock policy check${config}     # validate the policy\n` +
      `  airlock doctor${config}           # check secrets, folders and git before serving\n` +
      `  airlock serve${config}            # open the team's sockets under ${path.join(dir, 'run', team)}\n`,
  );
  return 0;
}
