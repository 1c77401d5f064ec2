// The stream scrubber and the usage tap on their own: every way of cutting a body into chunks
// must give the same bytes as scrubbing it whole, and the tap must read usage whatever the cuts.
import { describe, expect, it } from 'vitest';
import { StreamScrubber, UsageTap } from '../../src/model/proxy.js';
import { Redactor } from '../../src/secrets/redact.js';
import { API_KEY } from './harness.js';

function scrubInChunks(redactor: Redactor, body: Buffer, cuts: number[]): Buffer {
  const scrubber = new StreamScrubber(redactor, API_KEY);
  const out: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, body.length]) {
    out.push(scrubber.push(body.subarray(from, cut)));
    from = cut;
  }
  out.push(scrubber.flush());
  return Buffer.concat(out);
}

describe('StreamScrubber', () => {
  const redactor = new Redactor();
  redactor.add(API_KEY);
  const b64 = Buffer.from(`x:${API_KEY}`).toString('base64');
  const body = Buffer.from(
    `event: a\ndata: {"text":"ünï ${API_KEY} mid"}\n\nevent: b\ndata: {"auth":"Basic ${b64}","hex":"${Buffer.from(API_KEY).toString('hex')}"}\n\n`,
  );
  const whole = Buffer.from(redactor.scrub(body.toString('latin1')), 'latin1');

  it('gives the same output as scrubbing the whole body, for every single cut', () => {
    expect(whole.toString()).not.toContain(API_KEY);
    for (let cut = 1; cut < body.length; cut++) {
      expect(scrubInChunks(redactor, body, [cut]).equals(whole), `cut at ${cut}`).toBe(true);
    }
  });

  it('gives the same output when the body arrives byte by byte (multibyte characters split)', () => {
    const cuts = Array.from({ length: body.length - 1 }, (_, i) => i + 1);
    expect(scrubInChunks(redactor, body, cuts).equals(whole)).toBe(true);
  });

  it('passes complete lines at once and holds back only an unfinished line', () => {
    const scrubber = new StreamScrubber(redactor, API_KEY);
    const event = Buffer.from('event: ping\ndata: {"type":"ping"}\n\n');
    expect(scrubber.push(event).equals(event)).toBe(true);
    expect(scrubber.push(Buffer.from('data: partial')).length).toBe(0);
    expect(scrubber.flush().toString()).toBe('data: partial');
  });

  it('does not hand out the start of a key when the stream stops inside it', () => {
    // The idle/total timeout (or the upstream) can end a stream anywhere; what the scrubber held
    // back then goes out with the final flush.
    for (const form of [API_KEY, Buffer.from(API_KEY).toString('hex')]) {
      for (const missing of [1, 5, form.length - 12]) {
        const scrubber = new StreamScrubber(redactor, API_KEY);
        const cut = `data: {"text":"${form.slice(0, form.length - missing)}`;
        const out = Buffer.concat([scrubber.push(Buffer.from(cut, 'latin1')), scrubber.flush()]).toString(
          'latin1',
        );
        expect(out, `${missing} missing`).toBe('data: {"text":"[redacted]');
      }
    }
    // Text that merely ends like the key's first few characters is left alone.
    const scrubber = new StreamScrubber(redactor, API_KEY);
    const ordinary = 'data: {"text":"sk-ant';
    expect(Buffer.concat([scrubber.push(Buffer.from(ordinary)), scrubber.flush()]).toString()).toBe(ordinary);
  });
});

describe('UsageTap', () => {
  const sse =
    'event: message_start\r\ndata: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":11,"cache_read_input_tokens":7,"output_tokens":1}}}\r\n\r\n' +
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}\n\n';

  it('reads model and usage from SSE events however the stream is cut', () => {
    const bytes = Buffer.from(sse);
    for (let cut = 1; cut < bytes.length; cut += 7) {
      const tap = new UsageTap('sse');
      tap.feed(bytes.subarray(0, cut));
      tap.feed(bytes.subarray(cut));
      tap.end();
      expect(tap.model).toBe('claude-x');
      expect(tap.usage).toEqual({ input_tokens: 11, cache_read_input_tokens: 7, output_tokens: 42 });
    }
  });

  it('reports an error event in the stream', () => {
    const tap = new UsageTap('sse');
    tap.feed(
      Buffer.from(
        'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
      ),
    );
    tap.end();
    expect(tap.errorMessage).toBe('overloaded_error: Overloaded');
  });
});
