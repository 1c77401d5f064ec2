// Soak: repeated rounds of the load mix (bench/load.ts: every server and the model socket, two
// teams, allowed and denied calls), then connection churn and a crowd of idle connections, all
// against one `airlock serve` process. After every phase it prints the broker's RSS and open file
// descriptors against the figures after the first round; a leak shows as growth that keeps going.
//
//   npm run build && node dist/bench/soak.js [--rounds 5] [--seconds 20] [--sessions 100]
//     [--cycles 10000] [--churn-passes 3] [--idle 2000] [--no-postgres]
import net from 'node:net';
import { parseArgs } from 'node:util';
import { brokerMemory, percentile, RawMcpSession } from './harness.js';
import { openFds, startLoadRig, type LoadRig } from './load.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '20' },
    sessions: { type: 'string', default: '100' },
    cycles: { type: 'string', default: '10000' },
    idle: { type: 'string', default: '2000' },
    'churn-passes': { type: 'string', default: '3' },
    'no-postgres': { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(values.rounds);
const CYCLES = Number(values.cycles);
const IDLE = Number(values.idle);
const CHURN_PASSES = Number(values['churn-passes']);

const INIT =
  JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'soak', version: '0' } },
  }) + '\n';

interface Figures {
  rss: number;
  fds: number;
}

function measure(rig: LoadRig): Figures {
  return { rss: brokerMemory(rig.broker.pid!).rss, fds: openFds(rig.broker.pid!) };
}

const delta = (a: number, b: number) => `${b - a >= 0 ? '+' : ''}${b - a}`;
function report(label: string, base: Figures, now: Figures): void {
  console.log(
    `${label.padEnd(34)} RSS ${String(now.rss).padStart(5)} MiB (${delta(base.rss, now.rss).padStart(4)})   open fds ${String(now.fds).padStart(5)} (${delta(base.fds, now.fds).padStart(5)})`,
  );
}

/** Connects and goes away: half of the cycles after a handshake, half without a byte sent. */
function cycle(socketPath: string, handshake: boolean): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.on('connect', () => {
      if (!handshake) return void s.destroy();
      s.write(INIT);
      s.once('data', () => s.destroy());
    });
  });
}

async function churn(rig: LoadRig): Promise<number> {
  const socketPath = rig.socket('alpha', 'http');
  let done = 0;
  const worker = async () => {
    while (done < CYCLES) {
      const i = done++;
      await cycle(socketPath, i % 2 === 0);
    }
  };
  const t = performance.now();
  await Promise.all(Array.from({ length: 32 }, worker));
  return performance.now() - t;
}

/** Opens IDLE connections that never send a byte, times another session meanwhile, then closes them. */
async function idleCrowd(
  rig: LoadRig,
): Promise<{ open: number; refused: Map<string, number>; p50: number; max: number; during: Figures }> {
  const sockets: net.Socket[] = [];
  const refused = new Map<string, number>();
  // In batches that wait for their connects: a burst past the listen backlog is refused (EAGAIN).
  for (let i = 0; i < IDLE; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, IDLE - i) }, async () => {
        for (let attempt = 0; attempt < 5; attempt++) {
          const s = net.connect(rig.socket('beta', 'http'));
          const err = await new Promise<string | undefined>((resolve) => {
            s.once('connect', () => resolve(undefined));
            s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
          });
          if (err === undefined) {
            s.on('error', () => undefined);
            sockets.push(s);
            return;
          }
          refused.set(err, (refused.get(err) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 20));
        }
      }),
    );
  }
  await new Promise((r) => setTimeout(r, 1000));
  const open = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
  const during = measure(rig);
  const victim = await RawMcpSession.open(rig.socket('alpha', 'http'));
  const ms: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t = performance.now();
    await victim.request('tools/list', {});
    ms.push(performance.now() - t);
  }
  victim.close();
  for (const s of sockets) s.destroy();
  ms.sort((a, b) => a - b);
  return { open, refused, p50: percentile(ms, 0.5), max: ms.at(-1)!, during };
}

const settle = () => new Promise((r) => setTimeout(r, 3000));

async function main(): Promise<void> {
  const rig = await startLoadRig({
    seconds: Number(values.seconds),
    sessions: Number(values.sessions),
    withPostgres: !values['no-postgres'],
    maxSessionsPerTeam: Math.max(Number(values.sessions), IDLE + 64),
  });
  let failed = false;
  try {
    await rig.isolation(); // also clones the git workspaces
    const start = measure(rig);
    const rounds: Figures[] = [];
    for (let i = 1; i <= ROUNDS; i++) {
      const r = await rig.run(i);
      if (r.protocolErrors + r.unexpected > 0) failed = true;
      rounds.push({ rss: r.rss, fds: r.fds });
    }
    const first = rounds[0]!;
    console.log(`\nbroker at start: RSS ${start.rss} MiB, open fds ${start.fds}; against round 1:`);
    rounds.forEach((f, i) => report(`after round ${i + 1}`, first, f));

    // Several passes: memory the first grew that later ones do not grow further is reuse, not a leak.
    for (let pass = 1; pass <= CHURN_PASSES; pass++) {
      const churnMs = await churn(rig);
      await settle();
      report(`after ${CYCLES} connect/disconnect (${pass})`, first, measure(rig));
      console.log(`  (${(CYCLES / (churnMs / 1000)).toFixed(0)} cycles/s)`);
    }

    const idle = await idleCrowd(rig);
    report(`with ${idle.open} idle connections open`, first, idle.during);
    console.log(
      `  another team's tools/list meanwhile: p50 ${idle.p50.toFixed(1)} ms, max ${idle.max.toFixed(1)} ms`,
    );
    await settle();
    const after = measure(rig);
    report('after the idle connections closed', first, after);

    const final = await rig.run(ROUNDS + 1);
    if (final.protocolErrors + final.unexpected > 0) failed = true;
    await rig.isolation();
    report('after a last round', first, { rss: final.rss, fds: final.fds });
    if (idle.open < IDLE || idle.refused.size)
      console.log(
        `note: ${idle.open} of ${IDLE} idle connections stayed open; connect errors retried: ${JSON.stringify(Object.fromEntries(idle.refused))}`,
      );
  } finally {
    await rig.close();
  }
  if (failed) process.exitCode = 1;
}

await main();
