// Every MCP server Airlock ships. Adding one = adding its folder under servers/ and a line here.
// Each is imported when a policy names it (ServerCatalog), not when the broker starts.
import { ServerCatalog, type ServerDefinition } from './tool.js';

export const SERVERS = new ServerCatalog({
  git: async () => (await import('../servers/git/index.js')).gitServer as ServerDefinition,
  http: async () => (await import('../servers/http/index.js')).httpServer as ServerDefinition,
  github: async () => (await import('../servers/github/index.js')).githubServer as ServerDefinition,
  postgres: async () => (await import('../servers/postgres/index.js')).postgresServer as ServerDefinition,
});
