// One hostile peer cannot flood the broker's log: a session that mixes broken frames with valid
// ones (so it is never closed for "too many broken frames in a row") gets an error answer for each,
// but only its first MAX_LOGGED_PROTOCOL_ERRORS are logged, then one line says the rest are
// counted, and its end logs how many were left out. Another session's errors are logged as usual.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Broker } from '../../src/broker.js';
import { MAX_LOGGED_PROTOCOL_ERRORS } from '../../src/transport/ndjson.js';
import {
  acmeHttpPolicy,
  INIT_LINE,
  makeInstallation,
  rawExchange,
  startEchoUpstream,
  type EchoUpstream,
  type Installation,
} from '../helpers/fixture.js';

const BROKEN_FRAMES = 500;

describe('protocol errors in the log', () => {
  let inst: Installation;
  let upstream: EchoUpstream;
  let broker: Broker;
  const logLines: Array<{ msg: string; message?: string }> = [];

  beforeAll(async () => {
    const [{ Broker: BrokerClass }, { loadConfig }] = await Promise.all([
      import('../../src/broker.js'),
      import('../../src/config/airlock-yaml.js'),
    ]);
    upstream = await startEchoUpstream();
    inst = await makeInstallation({
      secrets: { 'api-token': 'log-flood-token-7e2d91' },
      policies: { 'acme.yaml': acmeHttpPolicy(upstream.origin) },
    });
    const log = pino(
      { level: 'info' },
      { write: (line: string) => void logLines.push(JSON.parse(line) as { msg: string }) },
    );
    broker = await BrokerClass.start(await loadConfig(inst.configFile), { log });
  });

  afterAll(async () => {
    await broker?.stop(1000);
    await upstream?.close();
    await inst?.cleanup();
  });

  const protocolLines = () => logLines.filter((l) => l.msg === 'protocol error');
  const ping = (id: number) => JSON.stringify({ jsonrpc: '2.0', id, method: 'ping' }) + '\n';

  it(`logs ${MAX_LOGGED_PROTOCOL_ERRORS} of ${BROKEN_FRAMES} broken frames, one "counted" line and a summary at the end`, async () => {
    // Each broken frame is followed by a valid ping, so the session is never closed for them.
    let payload = INIT_LINE;
    for (let i = 0; i < BROKEN_FRAMES; i++) payload += `{"half json ${i}\n` + ping(1000 + i);
    const { lines, closed } = await rawExchange(inst.socket('acme', 'http'), payload, {
      waitMs: 20_000,
      expectLines: 1 + 2 * BROKEN_FRAMES,
    });
    expect(closed).toBe(false);
    // Every frame was answered: an error for each broken one, a result for each ping.
    const answers = lines as Array<{ id: unknown; error?: { code: number }; result?: unknown }>;
    expect(answers.filter((a) => a.error?.code === -32700)).toHaveLength(BROKEN_FRAMES);
    expect(answers.filter((a) => typeof a.id === 'number' && a.id >= 1000 && a.result)).toHaveLength(
      BROKEN_FRAMES,
    );

    // The session ended when rawExchange closed the socket; its summary line follows.
    await waitFor(() => protocolLines().some((l) => l.message?.startsWith('session ended')));
    const logged = protocolLines();
    expect(logged).toHaveLength(MAX_LOGGED_PROTOCOL_ERRORS + 2);
    expect(
      logged
        .slice(0, MAX_LOGGED_PROTOCOL_ERRORS)
        .every((l) => l.message === 'Parse error: frame is not valid JSON'),
    ).toBe(true);
    expect(logged[MAX_LOGGED_PROTOCOL_ERRORS]!.message).toBe(
      `more than ${MAX_LOGGED_PROTOCOL_ERRORS} protocol errors; the rest of this session's are counted, not logged`,
    );
    expect(logged.at(-1)!.message).toBe(
      `session ended; ${BROKEN_FRAMES - MAX_LOGGED_PROTOCOL_ERRORS} protocol errors were not logged`,
    );
  });

  it("another session's protocol errors are still logged", async () => {
    const before = protocolLines().length;
    await rawExchange(inst.socket('acme', 'http'), INIT_LINE + 'not json\n' + ping(7), { expectLines: 3 });
    const mine = protocolLines().slice(before);
    expect(mine[0]!.message).toBe('Parse error: frame is not valid JSON');
    expect(mine).toHaveLength(1); // under the cap: no "counted" line, no summary
  });
});

async function waitFor(ok: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
