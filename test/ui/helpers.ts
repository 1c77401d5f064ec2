// `airlock ui` as a process (its login URL read from stdout) and headless Chromium.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { CLI, REPO_ROOT, type Installation } from '../helpers/fixture.js';

export const ARTIFACTS = path.join(REPO_ROOT, '.tmp', 'artifacts');

export interface UiProcess {
  child: ChildProcess;
  loginUrl: string;
  origin: string;
  stop(): Promise<void>;
}

export async function startUiProcess(inst: Installation, listen = '127.0.0.1:0'): Promise<UiProcess> {
  const child = spawn(process.execPath, [CLI, 'ui', '--listen', listen, '--config', inst.configFile], {
    env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const loginUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`airlock ui printed no URL:\n${out}\n${err}`)), 20_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /open (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`airlock ui exited (${code}):\n${out}\n${err}`));
    });
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    child,
    loginUrl,
    origin: new URL(loginUrl).origin,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function launchChromium(): Promise<Browser> {
  await mkdir(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}
