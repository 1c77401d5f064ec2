// The git server: git on the host for an agent whose work tree is mounted into its sandbox.
// The `.git` directory is host-owned (under the state folder); the agent's tree is only content.
import { defineServer, type SecretRef } from '../../src/tool.js';
import { gitSectionSchema, type GitSection } from './policy.js';
import { gitTools } from './tools.js';

export const gitServer = defineServer<GitSection>({
  name: 'git',
  description:
    'Git for a sandboxed work tree: status, diff, log, commit, and push/pull to the policy remote only.',
  section: gitSectionSchema,
  tools: gitTools,
  secretRefs(section: GitSection): SecretRef[] {
    return Object.entries(section.workspaces).flatMap(([name, ws]) =>
      ws.credential ? [{ name: ws.credential, path: ['workspaces', name, 'credential'] }] : [],
    );
  },
});

export default gitServer;
export { gitSectionSchema, pushOptionsSchema, pullOptionsSchema, type GitSection } from './policy.js';
export { gitTools } from './tools.js';
