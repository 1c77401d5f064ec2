// One session sending worst-case frames (4 MiB, hundreds of thousands of keys) must not stall
// another team's sessions, and no call may write an oversized audit record.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { canonicalJson, DEFAULT_MAX_AUDIT_RECORD_BYTES, truncateForAudit } from '../../src/audit/log.js';
import { MAX_FRAME_BYTES } from '../../src/transport/ndjson.js';
import {
  acmeHttpPolicy,
  connectSocketClient,
  INIT_LINE,
  rawExchange,
  startAcmeHttpBroker,
  type AcmeHttpBroker,
} from '../helpers/fixture.js';

const line = (o: unknown) => JSON.stringify(o) + '\n';
const INITIALIZED = line({ jsonrpc: '2.0', method: 'notifications/initialized' });

/** A tools/call frame just under the frame cap whose arguments object has as many keys as fit. */
function worstCaseFrame(id: number): string {
  const head = `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"http_request","arguments":{`;
  const parts: string[] = [];
  let size = head.length + 8;
  for (let i = 0; size < MAX_FRAME_BYTES - 64; i++) {
    const part = `"k${i}":${i}`;
    parts.push(part);
    size += part.length + 1;
  }
  return `${head}${parts.join(',')}}}}\n`;
}

/** A tools/call frame just under the frame cap that is one long string: the most bytes to scrub. */
function longStringFrame(id: number): string {
  const head = `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"http_request","arguments":{"method":"POST","url":"http://127.0.0.1:9/v1/x","body":"`;
  return `${head}${'x'.repeat(MAX_FRAME_BYTES - head.length - 16)}"}}}\n`;
}

describe('worst-case frames', () => {
  let fixture: AcmeHttpBroker;
  let victim: Client;

  beforeAll(async () => {
    fixture = await startAcmeHttpBroker({ secret: 'sk_worst_case_secret_0123456789' });
    // A second team on the same broker: its session is the one that must keep being answered.
    await fixture.inst.writePolicy(
      'beta.yaml',
      acmeHttpPolicy(fixture.upstream.origin).replace('team: acme', 'team: beta'),
    );
    await fixture.broker.reload();
    ({ client: victim } = await connectSocketClient(fixture.inst.socket('beta', 'http')));
  });

  afterAll(async () => {
    await victim?.close();
    await fixture?.close();
  });

  const victimCall = async (): Promise<number> => {
    const t = performance.now();
    const r = await victim.callTool({
      name: 'http_request',
      arguments: { method: 'GET', url: `${fixture.upstream.origin}/v1/ping` },
    });
    expect(r.isError).toBeFalsy();
    return performance.now() - t;
  };

  it('answers another team while one session sends 4 MiB frames (~300,000 keys, or one string)', async () => {
    // Two kinds of worst case: the most values, and the most bytes to scrub and digest.
    const frames = Array.from({ length: 6 }, (_, i) => (i % 2 ? longStringFrame : worstCaseFrame)(100 + i));
    expect(Buffer.byteLength(frames[0]!)).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    expect(frames[0]!.split(',').length).toBeGreaterThan(250_000);
    expect(Buffer.byteLength(frames[1]!)).toBeLessThanOrEqual(MAX_FRAME_BYTES);

    for (let i = 0; i < 30; i++) await victimCall(); // warm: pools and code paths are hot

    const attacker = net.connect(fixture.socketPath);
    await new Promise<void>((r) => attacker.once('connect', r));
    const answers: Array<{ id?: unknown; error?: { code: number; message: string } }> = [];
    let buf = '';
    attacker.on('data', (d) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        answers.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
    });
    attacker.write(INIT_LINE + INITIALIZED);
    let attackDone = false;
    const attack = (async () => {
      for (const f of frames) {
        if (!attacker.write(f)) await new Promise((r) => attacker.once('drain', r));
      }
      const until = Date.now() + 20_000;
      while (
        answers.filter((a) => typeof a.id === 'number' && a.id >= 100).length < frames.length &&
        Date.now() < until
      )
        await new Promise((r) => setTimeout(r, 10));
      attackDone = true;
    })();
    let answered = 0;
    let answeredMidAttack = 0;
    while (!attackDone || answered < 10) {
      await victimCall();
      answered++;
      if (!attackDone) answeredMidAttack++;
    }
    await attack;
    attacker.destroy();

    // Every worst-case frame was answered, with its own id, as a refusal (a protocol error for
    // too many values, a denied call for a body over the http server's 1 MiB).
    const refused = answers.filter((a) => typeof a.id === 'number' && a.id >= 100);
    expect(refused.map((a) => a.id).sort()).toEqual(frames.map((_, i) => 100 + i));
    for (const a of refused) {
      if ((a.id as number) % 2) expect(a).toMatchObject({ result: { isError: true } });
      else expect(a.error?.message).toMatch(/more than \d+ JSON values/);
    }
    // The other team was answered while the attack was still being refused (no duration is
    // asserted: a busy machine may be slow; before the bounds, one frame held the event loop and
    // every other session with it until it was parsed whole).
    expect(answeredMidAttack).toBeGreaterThan(0);
  });

  it('refuses arguments over the per-call bounds with one audited denial that records a digest', async () => {
    const args: Record<string, number> = {};
    for (let i = 0; i < 5000; i++) args[`key${i}`] = i;
    const { client } = await connectSocketClient(fixture.socketPath);
    const r = await client.callTool({ name: 'http_request', arguments: args });
    await client.close();
    expect(r.isError).toBe(true);
    expect((r.content as Array<{ text: string }>)[0]!.text).toBe(
      'invalid argument: an object in the arguments has more than 1000 keys',
    );
    const records = (await readFile(fixture.inst.auditFile, 'utf8')).trim().split('\n');
    const rec = JSON.parse(records.at(-1)!) as Record<string, unknown>;
    expect(rec).toMatchObject({ decision: 'deny', rule: 'session.arguments', outcome: 'denied' });
    const json = JSON.stringify(args);
    const hex = createHash('sha256').update(json).digest('hex');
    expect(rec.args).toBe(
      `[not recorded: an object in the arguments has more than 1000 keys; ${Buffer.byteLength(json)} bytes, sha256:${hex}]`,
    );
  });

  it('caps every audit record at 64 KiB, with the digest of what was cut', async () => {
    // Within the per-call bounds, but 200 kB even after each string is cut to 1 KiB.
    const args: Record<string, string> = {};
    for (let i = 0; i < 200; i++) args[`field${i}`] = String(i).padEnd(1000, 'x');
    const { client } = await connectSocketClient(fixture.socketPath);
    const r = await client.callTool({ name: 'http_request', arguments: args });
    await client.close();
    expect(r.isError).toBe(true);
    const lines = (await readFile(fixture.inst.auditFile, 'utf8')).trim().split('\n');
    for (const l of lines)
      expect(Buffer.byteLength(l)).toBeLessThanOrEqual(DEFAULT_MAX_AUDIT_RECORD_BYTES + 512);
    const rec = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
    const kept = canonicalJson(truncateForAudit(args));
    const hex = createHash('sha256').update(kept).digest('hex');
    expect(rec.args).toBe(`…[cut: ${Buffer.byteLength(kept)} bytes, sha256:${hex}]`);
    // The reason (which lists the unknown fields) is cut to its first KiB like any string.
    expect(String(rec.reason).length).toBeLessThan(1200);
  });

  it('answers a frame over the value bound with its id, and the session carries on', async () => {
    const big = {
      jsonrpc: '2.0',
      id: 'big-1',
      method: 'ping',
      params: { list: Array.from({ length: 30_000 }, () => 0) },
    };
    const { lines, closed } = await rawExchange(
      fixture.socketPath,
      INIT_LINE + INITIALIZED + line(big) + line({ jsonrpc: '2.0', id: 2, method: 'ping' }),
      { expectLines: 3, waitMs: 3000 },
    );
    expect(closed).toBe(false);
    expect(lines.find((l) => (l as { id?: unknown }).id === 'big-1')).toMatchObject({
      error: { code: -32600 },
    });
    expect(lines.find((l) => (l as { id?: unknown }).id === 2)).toMatchObject({ result: {} });
  });
});
