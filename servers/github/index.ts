// The github server: repository- and argument-scoped GitHub tools. The credential (a token, or a
// GitHub App whose installation tokens are minted per call for one repository and the tool's
// permissions) never leaves the host; text from GitHub is cleaned and labelled before an agent sees it.
import { defineServer } from '../../src/tool.js';
import { createGithubRuntime, type GithubRuntime } from './client.js';
import { githubSecretRefs, githubSectionSchema, type GithubSection } from './section.js';
import { githubTools } from './tools.js';

export const githubServer = defineServer<GithubSection, GithubRuntime>({
  name: 'github',
  description:
    'GitHub issues, pull requests and contents of policy-listed repositories, with a host-held credential',
  section: githubSectionSchema,
  tools: githubTools,
  secretRefs: githubSecretRefs,
  createRuntime: async ({ section }) => createGithubRuntime(section),
});

export { githubSectionSchema, type GithubSection } from './section.js';
export { githubTools, PERMISSIONS } from './tools.js';
