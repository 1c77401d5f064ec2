// Which network addresses an http_request may reach. An upstream is reachable only on a
// globally routable unicast address unless its policy entry sets `allowPrivateAddress`; cloud
// metadata endpoints (which hand out instance credentials) are never reachable. IPv6 forms that
// carry an IPv4 address inside (mapped, compatible, NAT64, 6to4, Teredo) are judged by the
// address they carry, so `::ffff:127.0.0.1` is loopback. ipaddr.js knows the IANA ranges.
import { isIP, isIPv4 } from 'node:net';
import ipaddr from 'ipaddr.js';

export type AddressClass =
  /** Globally routable: allowed. */
  | { kind: 'public'; range: string }
  /** Loopback, private, link-local, …: allowed only with `allowPrivateAddress`. */
  | { kind: 'private'; range: string }
  /** A cloud metadata endpoint: never allowed. */
  | { kind: 'metadata'; range: string };

/** Host names of cloud metadata services (GCP, AWS, generic). Compared lower-case, without a trailing dot. */
const METADATA_HOSTNAMES: ReadonlySet<string> = new Set([
  'metadata.google.internal',
  'metadata.goog',
  'metadata',
  'instance-data',
  'instance-data.ec2.internal',
]);

let metadataAddresses: ReadonlySet<string> | undefined;

/**
 * Metadata service addresses: AWS/GCP/Azure IMDS (169.254.169.254), AWS IMDS over IPv6
 * (fd00:ec2::254), GCP metadata over IPv6 (fd20:ce::254), Alibaba (100.100.100.200), Tencent
 * (169.254.0.23), AWS ECS task credentials (169.254.170.2), EKS Pod Identity (169.254.170.23,
 * fd00:ec2::23) and Azure WireServer (168.63.129.16, a public address that serves VM credentials).
 * Parsed on first use: ipaddr.js compiles its IPv6 patterns on its first parse, which would
 * otherwise be part of every command's start-up.
 */
function metadataAddressSet(): ReadonlySet<string> {
  return (metadataAddresses ??= new Set(
    [
      '169.254.169.254',
      'fd00:ec2::254',
      'fd20:ce::254',
      '100.100.100.200',
      '169.254.0.23',
      '169.254.170.2',
      '169.254.170.23',
      'fd00:ec2::23',
      '168.63.129.16',
    ].map((a) => ipaddr.parse(a).toNormalizedString()),
  ));
}

/** ipaddr.js range names that are globally reachable (IANA special-purpose registry). */
const GLOBAL_RANGES: ReadonlySet<string> = new Set(['unicast', 'as112', 'amt', 'as112v6']);

function ipv4FromParts(high: number, low: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff]);
}

/** The IPv4 address an IPv6 address embeds, if it is one of the transition forms. */
function embeddedIPv4(v6: ipaddr.IPv6): { v4: ipaddr.IPv4[]; form: string } | undefined {
  const p = v6.parts as [number, number, number, number, number, number, number, number];
  const last32 = ipv4FromParts(p[6], p[7]);
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (deprecated "compatible"; :: and ::1 are handled as
  // unspecified/loopback before we get here).
  if (p[0] === 0 && p[1] === 0 && p[2] === 0 && p[3] === 0 && p[4] === 0 && (p[5] === 0xffff || p[5] === 0)) {
    return { v4: [last32], form: p[5] === 0xffff ? 'ipv4Mapped' : 'ipv4Compatible' };
  }
  // ::ffff:0:a.b.c.d (RFC 6145 translated)
  if (p[0] === 0 && p[1] === 0 && p[2] === 0 && p[3] === 0 && p[4] === 0xffff && p[5] === 0) {
    return { v4: [last32], form: 'rfc6145' };
  }
  // 64:ff9b::/96 well-known NAT64 prefix
  if (p[0] === 0x64 && p[1] === 0xff9b && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0) {
    return { v4: [last32], form: 'nat64' };
  }
  // 2002:AABB:CCDD::/16 6to4
  if (p[0] === 0x2002) return { v4: [ipv4FromParts(p[1], p[2])], form: '6to4' };
  // 2001:0::/32 Teredo: server IPv4 in bits 32–63, client IPv4 (inverted) in the last 32 bits.
  if (p[0] === 0x2001 && p[1] === 0) {
    return { v4: [ipv4FromParts(p[2], p[3]), ipv4FromParts(p[6] ^ 0xffff, p[7] ^ 0xffff)], form: 'teredo' };
  }
  return undefined;
}

function classifyParsed(addr: ipaddr.IPv4 | ipaddr.IPv6): AddressClass {
  if (metadataAddressSet().has(addr.toNormalizedString())) return { kind: 'metadata', range: 'metadata' };
  const range = addr.range();
  if (addr.kind() === 'ipv6') {
    const v6 = addr as ipaddr.IPv6;
    if (range === 'unspecified' || range === 'loopback') return { kind: 'private', range };
    // 64:ff9b:1::/48 is the local-use NAT64 prefix (RFC 8215): not globally reachable at all.
    if (range === 'rfc6052' && v6.parts[2] === 1) return { kind: 'private', range: 'nat64LocalUse' };
    const embedded = embeddedIPv4(v6);
    if (embedded) {
      // The worst embedded address decides (Teredo carries two).
      let verdict: AddressClass = { kind: 'public', range: embedded.form };
      for (const v4 of embedded.v4) {
        const inner = classifyParsed(v4);
        if (inner.kind === 'metadata') return { kind: 'metadata', range: `${embedded.form}(${inner.range})` };
        if (inner.kind === 'private')
          verdict = { kind: 'private', range: `${embedded.form}(${inner.range})` };
      }
      return verdict;
    }
  }
  return GLOBAL_RANGES.has(range) ? { kind: 'public', range } : { kind: 'private', range };
}

/** Classifies an IP address string (as returned by DNS, or a URL host without brackets). */
export function classifyAddress(ip: string): AddressClass {
  const known = verdicts.get(ip);
  if (known) return known;
  const bare = ip.replace(/%.*$/, ''); // drop an IPv6 zone id ("fe80::1%eth0")
  if (isIP(bare) === 0) throw new Error(`not an IP address: ${JSON.stringify(ip)}`);
  const verdict = Object.freeze(classifyParsed(ipaddr.parse(bare)));
  if (verdicts.size >= MAX_REMEMBERED_VERDICTS) verdicts.clear();
  verdicts.set(ip, verdict);
  return verdict;
}

/**
 * Verdicts by address text: an address's class never changes, and every http_request classifies
 * its upstream's address two or three times (policy check, each DNS answer), which parsing with
 * ipaddr.js made a few per cent of the broker's CPU. Bounded: a flood of distinct addresses only
 * empties it.
 */
const verdicts = new Map<string, AddressClass>();
const MAX_REMEMBERED_VERDICTS = 4096;

/**
 * The IP literal of a WHATWG `URL.hostname` ("127.0.0.1", "[::1]"), or undefined for a DNS
 * name. WHATWG has already normalized decimal/hex/octal IPv4 forms to dotted decimal.
 */
export function ipLiteralOf(hostname: string): string | undefined {
  const bare = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  // Every IPv6 form has a ':'; without one only IPv4 is possible. isIP's IPv6 pattern costs
  // ~4 ms to compile on first use, which each start-up checking an http origin paid.
  if (!bare.includes(':')) return isIPv4(bare) ? bare : undefined;
  return isIP(bare) ? bare : undefined;
}

export function isMetadataHostname(hostname: string): boolean {
  return METADATA_HOSTNAMES.has(hostname.toLowerCase().replace(/\.$/, ''));
}

/** Classifies a URL host: a metadata name, or an IP literal; undefined for other DNS names. */
export function classifyHostname(hostname: string): AddressClass | undefined {
  if (isMetadataHostname(hostname)) return { kind: 'metadata', range: 'metadata' };
  const literal = ipLiteralOf(hostname);
  return literal ? classifyAddress(literal) : undefined;
}
