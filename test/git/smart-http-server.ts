// The loopback smart-HTTP git server (git http-backend behind Basic auth) lives with the demo,
// which ships it; the tests use the very same server.
export * from '../../src/demo/git-http-server.js';
