#!/usr/bin/env node
// airlock-bridge: relays stdin/stdout (or loopback TCP connections) to an Airlock Unix socket.
// This file must run on plain Node inside an agent image with nothing else installed: Node
// built-ins only, CommonJS so an extension-less copy (/usr/local/bin/airlock-bridge) runs as is.
// CommonJS on purpose (see above), so the import is a require.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import net = require('node:net');

const USAGE = 'usage: airlock-bridge SOCKET | airlock-bridge --listen HOST:PORT SOCKET';

/** stdin → socket, socket → stdout. Resolves with an exit code when either side is done. */
function relayStdio(socketPath: string): Promise<number> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      process.stdin.pause();
      socket.destroy(); // nothing of the bridge may outlive either side
      resolve(code);
    };
    const socket = net.connect(socketPath);
    socket.on('connect', () => {
      process.stdin.pipe(socket);
      socket.pipe(process.stdout);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      process.stderr.write(`airlock-bridge: ${socketPath}: ${err.code ?? err.message}\n`);
      finish(1);
    });
    // The client went away: stop sending, and exit once the broker has flushed its answers.
    process.stdin.on('end', () => {
      socket.end();
      setTimeout(() => finish(0), 2000).unref();
    });
    socket.on('close', () => {
      if (process.stdout.writableLength === 0) finish(0);
      else process.stdout.once('drain', () => finish(0));
    });
    process.stdout.on('error', () => {
      socket.destroy();
      finish(0);
    });
  });
}

function parseListen(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
  if (!m) throw new Error(`--listen wants HOST:PORT, got "${spec}"`);
  const host = (m[1] ?? m[2])!;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new Error(`port out of range: ${port}`);
  // Only loopback: inside the sandbox this exposes the socket to local processes, nothing more.
  if (!(host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    throw new Error(`--listen accepts loopback addresses only (127.0.0.1, ::1, localhost), got "${host}"`);
  }
  return { host, port };
}

/** Each TCP connection on HOST:PORT gets its own connection to the Unix socket. */
function listenTcp(spec: string, socketPath: string): Promise<net.Server> {
  const { host, port } = parseListen(spec);
  const server = net.createServer((client) => {
    const upstream = net.connect(socketPath);
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      process.stderr.write(`airlock-bridge: ${socketPath}: ${err.code ?? err.message}\n`);
      close();
    });
    client.on('close', close);
    upstream.on('close', () => client.end());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--listen') {
    if (argv.length !== 3) throw new Error(USAGE);
    const server = await listenTcp(argv[1]!, argv[2]!);
    process.stderr.write(`airlock-bridge: ${argv[1]} → ${argv[2]}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => server.close(() => resolve());
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  }
  if (argv.length !== 1 || argv[0]!.startsWith('-')) throw new Error(USAGE);
  return relayStdio(argv[0]!);
}

function runBridge(argv: string[]): Promise<number> {
  return main(argv).catch((err: Error) => {
    process.stderr.write(`airlock-bridge: ${err.message}\n`);
    return 1;
  });
}

export = { runBridge, relayStdio, listenTcp, parseListen };

if (require.main === module) {
  void runBridge(process.argv.slice(2)).then((code) => process.exit(code));
}
