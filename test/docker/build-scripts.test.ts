// docker/build-image.sh and docker/build-base-image.sh refuse bad input before they touch Docker:
// a clear message, exit 1, nothing built.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dockerDir } from './helpers.js';

const buildImage = path.join(dockerDir, 'build-image.sh');
const buildBase = path.join(dockerDir, 'build-base-image.sh');
const scratch = mkdtempSync(path.join(tmpdir(), 'airlock-build-args-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function script(file: string, args: string[]) {
  // DOCKER_HOST points nowhere: a script that got past its checks would fail differently.
  return spawnSync('bash', [file, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, DOCKER_HOST: `unix://${path.join(scratch, 'no-engine.sock')}` },
  });
}

const pem = (name: string, content: string) => {
  const file = path.join(scratch, name);
  writeFileSync(file, content);
  return file;
};
const CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

describe('docker/build-image.sh', () => {
  it('is valid bash, executable, and documents its options', () => {
    expect(spawnSync('bash', ['-n', buildImage]).status).toBe(0);
    expect(statSync(buildImage).mode & 0o111).toBe(0o111);
    const help = script(buildImage, ['--help']);
    expect(help.status).toBe(0);
    for (const option of ['--tag', '--base', '--ca-file', '--claude-code-version'])
      expect(help.stdout).toContain(option);
  });

  it.each([
    [['--tag', 'bad tag'], 'bad --tag'],
    [['--tag', '--privileged'], 'bad --tag'],
    [['--base', 'img;rm -rf /'], 'bad --base'],
    [['--claude-code-version', 'latest'], 'bad --claude-code-version'],
    [['--ca-file', '/nonexistent/ca.pem'], 'is not a readable file'],
    [['--ca-file', pem('empty.pem', '')], 'holds no PEM certificate'],
    [
      [
        '--ca-file',
        pem('with-key.pem', `${CERT}-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n`),
      ],
      'holds a private key',
    ],
    [['--network', 'host'], 'unknown option'],
    [['--tag'], '--tag needs a value'],
  ])('refuses %j', (args, message) => {
    const result = script(buildImage, args);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(message);
    expect(result.stderr).not.toContain('building');
  });

  it('says when the engine does not answer', () => {
    const result = script(buildImage, ['--ca-file', pem('ok.pem', CERT)]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('the Docker engine does not answer');
  });
});

describe('docker/build-base-image.sh', () => {
  it('is valid bash, executable, and documents its options', () => {
    expect(spawnSync('bash', ['-n', buildBase]).status).toBe(0);
    expect(statSync(buildBase).mode & 0o111).toBe(0o111);
    const help = script(buildBase, ['--help']);
    expect(help.status).toBe(0);
    for (const option of ['--tag', '--mirror', '--security-mirror', '--registry', '--ca-file', '--force'])
      expect(help.stdout).toContain(option);
  });

  it.each([
    [['--tag', 'Bad:Tag:Twice'], 'bad --tag'],
    [['--ca-file', '/nonexistent/ca.pem'], 'is not a readable file'],
    [['--bogus'], 'unknown option'],
  ])('refuses %j', (args, message) => {
    const result = script(buildBase, args);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(message);
  });
});
