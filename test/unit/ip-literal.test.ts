// ipLiteralOf skips node's IPv6 pattern for hosts without ':' (a start-up cost): it must still
// answer exactly what isIP on the unbracketed host answers.
import { isIP } from 'node:net';
import { expect, it } from 'vitest';
import { ipLiteralOf } from '../../src/net/addresses.js';

it('ipLiteralOf agrees with isIP on IPv4, IPv6, DNS names and near misses', () => {
  const hosts = [
    '127.0.0.1',
    '10.0.0.255',
    '256.1.1.1',
    '1.2.3',
    '01.2.3.4',
    '1.2.3.4.',
    '[::1]',
    '[::ffff:1.2.3.4]',
    '[fe80::1]',
    '[2001:db8::]',
    '::1',
    '[::1',
    '[]',
    '',
    'api.example.com',
    'localhost',
    '1e100.net',
    'deadbeef',
    'xn--nxasmq6b.example',
  ];
  for (const host of hosts) {
    const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
    expect(ipLiteralOf(host), host).toBe(isIP(bare) ? bare : undefined);
  }
  expect(ipLiteralOf('127.0.0.1')).toBe('127.0.0.1');
  expect(ipLiteralOf('[::1]')).toBe('::1');
  expect(ipLiteralOf('api.example.com')).toBeUndefined();
});
