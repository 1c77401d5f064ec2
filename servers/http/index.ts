// The HTTP server: one tool, http_request, to the upstreams a team's policy lists.
import { defineServer, type ServerDefinition } from '../../src/tool.js';
import { httpRequestTool } from './http_request.js';
import { httpSecretRefs, httpSectionSchema, type HttpSection } from './section.js';

export type { HttpSection, HostEntry } from './section.js';
export { httpSectionSchema } from './section.js';

export const httpServer: ServerDefinition<HttpSection> = defineServer<HttpSection>({
  name: 'http',
  description: 'HTTP requests to policy-listed upstreams, with credentials injected on the host',
  section: httpSectionSchema,
  tools: [httpRequestTool],
  secretRefs: httpSecretRefs,
});
