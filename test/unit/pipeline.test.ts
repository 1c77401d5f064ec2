// The pipeline's own guarantees, on a server made up for the test: whatever a tool does, every
// call ends in exactly the audit records the SPEC promises, and nothing escapes unredacted.
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { AuditEntry } from '../../src/audit/log.js';
import { silentLogger } from '../../src/log.js';
import { CallPipeline, MAX_CALLS_PER_SESSION, type SessionInfo } from '../../src/pipeline/pipeline.js';
import { HostRateLimiter } from '../../src/limits/local-store.js';
import { Redactor } from '../../src/secrets/redact.js';
import { allow, defineServer, defineTool, deny, ToolError, type ServerDefinition } from '../../src/tool.js';

const SECRET = 'pipeline-test-secret-9876543210';

function setup(behaviour: {
  authorize?: () => never;
  run?: () =>
    Promise<never> | Promise<{ structured: { text: string }; text: string; audit?: Record<string, unknown> }>;
}) {
  const echo = defineTool({
    name: 'echo',
    title: 'Echo',
    description: 'Echoes its text, with the secret appended.',
    input: z.object({ text: z.string() }).strict(),
    output: z.object({ text: z.string() }).strict(),
    options: z.object({}).strict(),
    annotations: { readOnlyHint: true, destructiveHint: false, openWorldHint: false },
    authorize: (args) => {
      if (behaviour.authorize) behaviour.authorize();
      if (args.text === 'forbidden') return deny('fake.rule', 'not this text');
      if (args.text === 'detail')
        return allow('fake.tools.echo', { tables: ['public.a'], decision: 'deny', note: `x ${SECRET}` });
      return allow('fake.tools.echo');
    },
    run: async (args, ctx) => {
      if (behaviour.run) return behaviour.run();
      const secret = await ctx.secrets.get('s');
      return { structured: { text: `${args.text} ${secret}` }, text: `${args.text} ${secret}` };
    },
  });
  const server = defineServer({
    name: 'http',
    description: 'fake',
    section: z.object({}),
    tools: [echo],
    secretRefs: () => [],
  });
  const records: AuditEntry[] = [];
  // As createCore does: every configured secret is known to the redactor before any call.
  const redactor = new Redactor();
  redactor.add(SECRET);
  const pipeline = new CallPipeline({
    servers: new Map([['http', server as ServerDefinition]]),
    policies: { get: () => ({ servers: { http: { tools: { echo: {} } } } }) },
    audit: { append: async (e) => void records.push(e) },
    secrets: { forTeam: () => ({ get: async () => SECRET }) },
    redactor,
    rateLimiter: new HostRateLimiter('/nonexistent'),
    stateDir: '/nonexistent',
    log: silentLogger(),
  });
  const session: SessionInfo = { id: 'sess', team: 't', server: 'http', transport: 'socket' };
  return { pipeline, records, session };
}

describe('CallPipeline', () => {
  it('writes request then result for an allowed call and redacts the result', async () => {
    const { pipeline, records, session } = setup({});
    const r = await pipeline.call(session, 'echo', { text: 'hi' });
    expect(JSON.stringify(r)).not.toContain(SECRET);
    expect(r.structuredContent).toEqual({ text: 'hi [redacted]' });
    expect(records.map((x) => [x.phase, x.decision, x.outcome])).toEqual([
      ['request', 'allow', undefined],
      ['result', 'allow', 'ok'],
    ]);
    expect(records[0]!.call).toBe(records[1]!.call);
  });

  it("adds a server's audit detail to the request and result records, redacted, never over core fields", async () => {
    const { pipeline, records, session } = setup({
      run: async () => ({ structured: { text: 'ok' }, text: 'ok', audit: { rowCount: 3, phase: 'x' } }),
    });
    const r = await pipeline.call(session, 'echo', { text: 'detail' });
    expect(r.isError).toBeFalsy();
    expect(records[0]).toMatchObject({ phase: 'request', decision: 'allow', tables: ['public.a'] });
    expect(records[0]!.note).toBe('x [redacted]');
    expect(records[1]).toMatchObject({ phase: 'result', rowCount: 3, outcome: 'ok' });
  });

  it('writes one deny record for a policy denial', async () => {
    const { pipeline, records, session } = setup({});
    const r = await pipeline.call(session, 'echo', { text: 'forbidden' });
    expect(r.isError).toBe(true);
    expect((r.content[0] as { text: string }).text).toBe('denied: fake.rule: not this text');
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      phase: 'result',
      decision: 'deny',
      rule: 'fake.rule',
      outcome: 'denied',
    });
  });

  it('turns an unexpected exception in a policy check into one audited error, not a crash', async () => {
    const { pipeline, records, session } = setup({
      authorize: () => {
        throw new Error(`bug while checking ${SECRET}`);
      },
    });
    const r = await pipeline.call(session, 'echo', { text: 'x' });
    expect(r.isError).toBe(true);
    expect((r.content[0] as { text: string }).text).toMatch(/^error: the call could not be handled/);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ decision: 'deny', rule: 'internal', outcome: 'error' });
    expect(JSON.stringify([r, records])).not.toContain(SECRET);
  });

  it('audits a handler failure as an error result with a redacted message', async () => {
    const { pipeline, records, session } = setup({
      run: async () => {
        throw new Error(`upstream said ${SECRET}`);
      },
    });
    const r = await pipeline.call(session, 'echo', { text: 'x' });
    expect(r.isError).toBe(true);
    expect(records.map((x) => x.outcome)).toEqual([undefined, 'error']);
    expect(JSON.stringify([r, records])).not.toContain(SECRET);
  });

  it('caps the calls one session may have in flight; other sessions are unaffected', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { pipeline, records, session } = setup({
      run: async () => {
        await gate;
        return { structured: { text: 'done' }, text: 'done' };
      },
    });
    const calls = Array.from({ length: MAX_CALLS_PER_SESSION }, () =>
      pipeline.call(session, 'echo', { text: 'x' }),
    );
    const extra = await pipeline.call(session, 'echo', { text: 'x' });
    expect((extra.content[0] as { text: string }).text).toMatch(
      /^denied: session\.concurrency: at most 16 calls/,
    );
    expect(records.at(-1)).toMatchObject({ rule: 'session.concurrency', decision: 'deny' });
    const other = pipeline.call({ ...session, id: 'other' }, 'echo', { text: 'y' });
    release();
    const results = await Promise.all([...calls, other]);
    expect(results.every((r) => !r.isError)).toBe(true);
    // Slots are given back.
    expect((await pipeline.call(session, 'echo', { text: 'z' })).isError).toBeFalsy();
  });

  it('records a refusal decided inside the handler (after I/O) as a denial in the result record', async () => {
    const { pipeline, records, session } = setup({
      run: async () => {
        throw new ToolError(
          'api.example.com resolves to 127.0.0.1, which is not a public address',
          'denied',
          'http.hosts[0].allowPrivateAddress',
        );
      },
    });
    const r = await pipeline.call(session, 'echo', { text: 'x' });
    expect((r.content[0] as { text: string }).text).toMatch(
      /^denied: http\.hosts\[0\]\.allowPrivateAddress: /,
    );
    expect(records.map((x) => [x.phase, x.decision, x.outcome])).toEqual([
      ['request', 'allow', undefined],
      ['result', 'deny', 'denied'],
    ]);
    expect(records[1]).toMatchObject({
      rule: 'http.hosts[0].allowPrivateAddress',
      reason: expect.stringContaining('127.0.0.1'),
    });
  });

  it('refuses the call when the request record cannot be written, and never runs the handler', async () => {
    let ran = false;
    const { pipeline, session } = setup({
      run: async () => {
        ran = true;
        throw new Error('must not run');
      },
    });
    (pipeline as unknown as { deps: { audit: { append: () => Promise<void> } } }).deps.audit.append =
      async () => {
        throw new Error('audit log unavailable: ENOSPC');
      };
    const r = await pipeline.call(session, 'echo', { text: 'hi' });
    expect(r.isError).toBe(true);
    expect((r.content[0] as { text: string }).text).toMatch(/^refused: the audit log is unavailable/);
    expect(ran).toBe(false);
  });

  it('gives each team one runtime (a pool), shared by its calls, closed on reset and rebuilt after', async () => {
    let created = 0;
    let closed = 0;
    const tool = defineTool({
      name: 'echo',
      title: 'Echo',
      description: 'Reports which runtime served it.',
      input: z.object({}).strict(),
      output: z.object({ runtime: z.number() }).strict(),
      options: z.object({}).strict(),
      annotations: { readOnlyHint: true, destructiveHint: false, openWorldHint: false },
      authorize: () => allow('fake.tools.echo'),
      run: async (_args, ctx) => {
        const rt = ctx.runtime as { id: number };
        return { structured: { runtime: rt.id }, text: String(rt.id) };
      },
    });
    const server = defineServer<unknown, { id: number }>({
      name: 'postgres',
      description: 'fake pooled server',
      section: z.object({}),
      tools: [tool],
      secretRefs: () => [],
      // Slow to create, as opening a pool is: concurrent first calls must still share one.
      createRuntime: async () => {
        const id = ++created;
        await new Promise((r) => setTimeout(r, 20));
        return { id, close: async () => void closed++ };
      },
    });
    const pipeline = new CallPipeline({
      servers: new Map([['postgres', server as ServerDefinition]]),
      policies: { get: () => ({ servers: { postgres: { tools: { echo: {} } } } }) },
      audit: { append: async () => undefined },
      secrets: { forTeam: () => ({ get: async () => 'x' }) },
      redactor: new Redactor(),
      rateLimiter: new HostRateLimiter('/tmp/airlock-runtime-test'),
      stateDir: '/tmp/airlock-runtime-test',
      log: silentLogger(),
    });
    const a = { id: 's1', team: 'a', server: 'postgres' as const, transport: 'socket' as const };
    const b = { ...a, id: 's2', team: 'b' };
    const ids = async (session: SessionInfo, n: number) =>
      (await Promise.all(Array.from({ length: n }, () => pipeline.call(session, 'echo', {})))).map(
        (r) => (r.structuredContent as { runtime: number }).runtime,
      );
    const first = await ids(a, 5);
    expect(new Set(first).size).toBe(1);
    const other = await ids(b, 3);
    expect(new Set(other).size).toBe(1);
    expect(other[0]).not.toBe(first[0]);
    expect(created).toBe(2);
    await pipeline.resetRuntimes('a'); // team a's policy changed
    expect(closed).toBe(1);
    const again = await ids(a, 2);
    expect(again[0]).not.toBe(first[0]);
    expect((await ids(b, 1))[0]).toBe(other[0]);
    await pipeline.resetRuntimes(); // shutdown
    expect(closed).toBe(3);
  });
});
