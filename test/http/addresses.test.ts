import { describe, expect, it } from 'vitest';
import { classifyAddress, classifyHostname, isMetadataHostname } from '../../src/net/addresses.js';

const kindOf = (ip: string) => classifyAddress(ip).kind;
const hostKind = (url: string) => classifyHostname(new URL(url).hostname)?.kind;

describe('classifyAddress', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.1.2.3', 'private 10/8'],
    ['172.16.0.1', 'private 172.16/12'],
    ['172.31.255.255', 'private 172.16/12'],
    ['192.168.1.1', 'private 192.168/16'],
    ['169.254.1.1', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'this network 0/8'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['100.127.255.254', 'carrier-grade NAT'],
    ['240.0.0.1', 'reserved'],
    ['192.0.0.8', 'IETF protocol assignments'],
    ['192.0.2.1', 'TEST-NET-1'],
    ['198.18.0.1', 'benchmarking'],
    ['198.51.100.7', 'TEST-NET-2'],
    ['203.0.113.9', 'TEST-NET-3'],
    ['::1', 'IPv6 loopback'],
    ['::', 'IPv6 unspecified'],
    ['fe80::1', 'IPv6 link-local'],
    ['fe80::1%eth0', 'IPv6 link-local with zone'],
    ['fc00::1', 'unique-local'],
    ['fd12:3456::1', 'unique-local'],
    ['ff02::1', 'IPv6 multicast'],
    ['fec0::1', 'deprecated site-local'],
    ['100::1', 'discard'],
    ['2001:db8::1', 'documentation'],
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback'],
    ['::ffff:7f00:1', 'IPv4-mapped loopback (hex)'],
    ['::ffff:10.0.0.1', 'IPv4-mapped private'],
    ['::127.0.0.1', 'IPv4-compatible loopback'],
    ['::ffff:0:127.0.0.1', 'RFC 6145 translated loopback'],
    ['64:ff9b::7f00:1', 'NAT64 loopback'],
    ['64:ff9b::192.168.0.1', 'NAT64 private'],
    ['64:ff9b:1::808:808', 'local-use NAT64 prefix'],
    ['2002:7f00:1::1', '6to4 of loopback'],
    ['2002:c0a8:101::1', '6to4 of 192.168.1.1'],
    ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'Teredo with client 127.0.0.1'],
    ['2001:0:a00:1:8000:63bf:f7f7:f7f7', 'Teredo with server 10.0.0.1'],
  ])('%s is not public (%s)', (ip) => {
    expect(kindOf(ip)).toBe('private');
  });

  it.each([
    ['8.8.8.8'],
    ['1.1.1.1'],
    ['93.184.216.34'],
    ['2606:4700:4700::1111'],
    ['::ffff:8.8.8.8'],
    ['64:ff9b::808:808'],
    ['2002:808:808::1'],
    ['2001:0:4136:e378:8000:63bf:f7f7:f7f7'], // Teredo: server 65.54.227.120, client 8.8.8.8
  ])('%s is public', (ip) => {
    expect(kindOf(ip)).toBe('public');
  });

  it.each([
    ['169.254.169.254'],
    ['fd00:ec2::254'],
    ['100.100.100.200'],
    ['169.254.170.2'],
    ['168.63.129.16'],
    ['169.254.170.23'], // EKS Pod Identity agent
    ['fd00:ec2::23'], // EKS Pod Identity agent over IPv6
    ['fd20:ce::254'], // GCP metadata server over IPv6
    ['169.254.0.23'], // Tencent Cloud metadata
    ['::ffff:169.254.169.254'],
    ['64:ff9b::a9fe:a9fe'],
    ['2002:a9fe:a9fe::1'],
  ])('%s is a metadata endpoint', (ip) => {
    expect(kindOf(ip)).toBe('metadata');
  });

  it('names the embedded range', () => {
    expect(classifyAddress('::ffff:127.0.0.1').range).toBe('ipv4Mapped(loopback)');
    expect(classifyAddress('64:ff9b::7f00:1').range).toBe('nat64(loopback)');
  });

  it('rejects strings that are not IP addresses', () => {
    expect(() => classifyAddress('localhost')).toThrow(/not an IP address/);
  });
});

describe('classifyHostname (WHATWG-normalized URL hosts)', () => {
  it.each([
    ['http://127.0.0.1/'],
    ['http://0x7f.1/'],
    ['http://2130706433/'],
    ['http://0177.0.0.1/'],
    ['http://0x7f000001/'],
    ['http://[::1]/'],
    ['http://[::ffff:127.0.0.1]/'],
    ['http://[64:ff9b::7f00:1]/'],
    ['http://10.0.0.1:8080/'],
  ])('%s is not public', (url) => {
    expect(hostKind(url)).toBe('private');
  });

  it.each([
    ['http://metadata.google.internal/'],
    ['http://METADATA.Google.Internal./'],
    ['http://metadata.goog/'],
    ['http://metadata/'],
    ['http://instance-data/'],
    ['http://instance-data.ec2.internal/'],
    ['http://169.254.169.254/'],
    ['http://2852039166/'], // 169.254.169.254 as one decimal number
    ['http://[fd00:ec2::254]/'],
    ['http://100.100.100.200/'],
  ])('%s is a metadata endpoint', (url) => {
    expect(hostKind(url)).toBe('metadata');
  });

  it('leaves other DNS names to resolution', () => {
    expect(classifyHostname('api.stripe.com')).toBeUndefined();
    expect(isMetadataHostname('metadata.example.com')).toBe(false);
  });
});
