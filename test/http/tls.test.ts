// TLS with a pinned address: SNI and certificate checks still use the URL's host name, and
// verification cannot be turned off by the environment.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHttpRequestTool } from '../../servers/http/http_request.js';
import { callTool, parseSection, toolError } from './context.js';

let dir: string;
let server: https.Server;
let port: number;
const sniSeen: string[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-http-tls-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=upstream.invalid',
      '-addext',
      'subjectAltName=DNS:upstream.invalid',
      '-keyout',
      path.join(dir, 'key.pem'),
      '-out',
      path.join(dir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  );
  const key = fs.readFileSync(path.join(dir, 'key.pem'));
  const cert = fs.readFileSync(path.join(dir, 'cert.pem'));
  server = https.createServer(
    {
      key,
      cert,
      SNICallback: (name, cb) => {
        sniSeen.push(name);
        cb(null, undefined);
      },
    },
    (_req, res) => res.end('secret page'),
  );
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  fs.rmSync(dir, { recursive: true, force: true });
});

it('verifies the certificate against the host name, even with NODE_TLS_REJECT_UNAUTHORIZED=0', async () => {
  const tool = createHttpRequestTool({ resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
  const origin = `https://upstream.invalid:${port}`;
  const previous = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  try {
    const err = await toolError(
      callTool(
        { method: 'GET', url: `${origin}/` },
        parseSection({ hosts: [{ origin, allowPrivateAddress: true }] }),
        { tool },
      ),
    );
    expect(err.kind).toBe('upstream');
    expect(err.message).toBe(`request to ${origin} failed: DEPTH_ZERO_SELF_SIGNED_CERT`);
  } finally {
    if (previous === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else process.env.NODE_TLS_REJECT_UNAUTHORIZED = previous;
  }
  // Connected to the pinned 127.0.0.1, but introduced itself by name.
  expect(sniSeen).toEqual(['upstream.invalid']);
});
