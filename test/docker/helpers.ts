import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const dockerDir = path.join(repoRoot, 'docker');
export const runAgentScript = path.join(dockerDir, 'run-agent.sh');
export const TEAM = 'payments';

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs docker/run-agent.sh with bash; `env` is merged over the current environment. */
export function runAgent(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
  const result = spawnSync('bash', [runAgentScript, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 20_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Splits the shell-quoted line that --print writes, with bash itself as the parser. */
export function parseShellLine(line: string): string[] {
  const result = spawnSync('bash', ['-c', 'eval "set -- $1"; printf "%s\\0" "$@"', '_', line], {
    encoding: 'utf8',
    timeout: 5_000,
  });
  if (result.status !== 0) throw new Error(`bash could not parse: ${line}\n${result.stderr}`);
  return result.stdout.split('\0').slice(0, -1);
}

/** A temp area with a workspace and a socket root holding the team's folder. */
export class Sandbox {
  readonly root = mkdtempSync(path.join(tmpdir(), 'airlock-docker-'));
  readonly workspace = path.join(this.root, 'work');
  readonly socketDir = path.join(this.root, 'sockets');

  constructor() {
    mkdirSync(this.workspace);
    mkdirSync(path.join(this.socketDir, TEAM), { recursive: true });
  }

  /** Creates a file (and its folders) under the workspace. */
  file(relative: string, content = 'x'): string {
    const full = path.join(this.workspace, relative);
    mkdirSync(path.dirname(full), { recursive: true });
    writeFileSync(full, content);
    return full;
  }

  baseArgs(): string[] {
    return ['--team', TEAM, '--workspace', this.workspace, '--socket-dir', this.socketDir];
  }

  cleanup(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Separates a printed `docker run` argv into docker options, the image and the container command. */
export function splitDockerRun(argv: string[], image = 'airlock-agent:latest') {
  if (argv[0] !== 'docker' || argv[1] !== 'run') throw new Error(`not a docker run: ${argv.join(' ')}`);
  const imageIndex = argv.indexOf(image, 2);
  if (imageIndex < 0) throw new Error(`image ${image} not found in ${argv.join(' ')}`);
  const options = argv.slice(2, imageIndex);
  return { options, image: argv[imageIndex], command: argv.slice(imageIndex + 1) };
}

/** Every value given to an option, in both `--opt value` and `--opt=value` spellings. */
export function optionValues(options: string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < options.length; i++) {
    const option = options[i]!;
    if (option === name) values.push(options[++i] ?? '');
    else if (option.startsWith(`${name}=`)) values.push(option.slice(name.length + 1));
  }
  return values;
}
