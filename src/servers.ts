// Every MCP server Airlock ships. Adding one = adding its folder under servers/ and a line here.
import { gitServer } from '../servers/git/index.js';
import { githubServer } from '../servers/github/index.js';
import { httpServer } from '../servers/http/index.js';
import { postgresServer } from '../servers/postgres/index.js';
import type { ServerDefinition, ServerName } from './tool.js';

export const SERVERS: ServerDefinition[] = [
  gitServer as ServerDefinition,
  httpServer as ServerDefinition,
  githubServer as ServerDefinition,
  postgresServer as ServerDefinition,
];

export const SERVER_MAP: ReadonlyMap<ServerName, ServerDefinition> = new Map(SERVERS.map((s) => [s.name, s]));
