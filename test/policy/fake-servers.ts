// Stand-in server definitions shaped like the SPEC's policy sections. The real servers
// (servers/*) plug into the same ServerDefinition contract; these exist so the policy machinery
// can be tested on its own. The http one carries the interesting parts: a glob list, an
// `inject` value with a `${secret:NAME}` reference, and tools with options.
import { z } from 'zod';
import { globSchema } from '../../src/policy/glob.js';
import { secretNameSchema } from '../../src/secrets/config.js';
import { allow, defineServer, defineTool, type SecretRef, type ServerDefinition } from '../../src/tool.js';

function fakeTool(name: string, options: z.ZodObject = z.object({}).strict()) {
  return defineTool({
    name,
    title: name,
    description: `fake ${name}`,
    input: z.object({}),
    output: z.object({}),
    options,
    annotations: { readOnlyHint: true, destructiveHint: false, openWorldHint: false },
    authorize: () => allow(name),
    run: async () => ({ structured: {}, text: '' }),
  });
}

const SECRET_REF_RE = /\$\{secret:([^}]*)\}/g;

const httpSection = z
  .object({
    hosts: z
      .array(
        z
          .object({
            origin: z.url(),
            methods: z.array(z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'])).default(['GET']),
            paths: z.array(globSchema).default(['/**']),
            inject: z
              .object({ header: z.string().min(1), value: z.string() })
              .strict()
              .optional(),
            allowPrivateAddress: z.boolean().default(false),
          })
          .strict(),
      )
      .min(1),
    maxResponseBytes: z.number().int().positive().default(1_048_576),
    timeoutMs: z.number().int().positive().default(10_000),
  })
  .strict();

type HttpSection = z.output<typeof httpSection>;

export const fakeHttp = defineServer<HttpSection>({
  name: 'http',
  description: 'fake http',
  section: httpSection,
  tools: [
    fakeTool('http_request', z.object({ methods: z.array(z.string()).optional() }).strict()),
    fakeTool('http_get', z.object({ maxBytes: z.number().int().positive().optional() }).strict()),
  ],
  secretRefs(section) {
    const refs: SecretRef[] = [];
    section.hosts.forEach((host, i) => {
      for (const m of host.inject?.value.matchAll(SECRET_REF_RE) ?? []) {
        refs.push({ name: m[1]!, path: ['hosts', i, 'inject', 'value'] });
      }
    });
    return refs;
  },
});

const gitSection = z
  .object({
    workspaces: z.record(
      z.string(),
      z
        .object({
          path: z.string(),
          remote: z.string(),
          credential: secretNameSchema.optional(),
          branch: z.string().optional(),
          author: z.object({ name: z.string(), email: z.string() }).strict().optional(),
        })
        .strict(),
    ),
  })
  .strict();

export const fakeGit = defineServer<z.output<typeof gitSection>>({
  name: 'git',
  description: 'fake git',
  section: gitSection,
  tools: [
    ...[
      'git_status',
      'git_diff',
      'git_log',
      'git_add',
      'git_commit',
      'git_create_branch',
      'git_checkout',
    ].map((n) => fakeTool(n)),
    fakeTool(
      'git_push',
      z.object({ branches: z.array(globSchema).optional(), force: z.boolean().default(false) }).strict(),
    ),
  ],
  secretRefs: (section) =>
    Object.entries(section.workspaces).flatMap(([name, ws]) =>
      ws.credential ? [{ name: ws.credential, path: ['workspaces', name, 'credential'] }] : [],
    ),
});

const githubSection = z
  .object({
    credential: secretNameSchema,
    apiUrl: z.url().default('https://api.github.com'),
    repos: z.array(globSchema),
  })
  .strict();

export const fakeGithub = defineServer<z.output<typeof githubSection>>({
  name: 'github',
  description: 'fake github',
  section: githubSection,
  tools: [
    fakeTool('get_file_contents'),
    fakeTool(
      'create_pull_request',
      z.object({ base: z.array(globSchema), head: z.array(globSchema) }).strict(),
    ),
    fakeTool('add_issue_comment'),
  ],
  secretRefs: (section) => [{ name: section.credential, path: ['credential'] }],
});

const postgresSection = z
  .object({
    databases: z.record(
      z.string(),
      z
        .object({
          connection: secretNameSchema,
          access: z.enum(['read-only', 'read-write']).default('read-only'),
          ddl: z.boolean().default(false),
          maxRows: z.number().int().positive().default(1000),
          statementTimeoutMs: z.number().int().positive().default(5000),
          tables: z.array(globSchema).optional(),
        })
        .strict(),
    ),
  })
  .strict();

export const fakePostgres = defineServer<z.output<typeof postgresSection>>({
  name: 'postgres',
  description: 'fake postgres',
  section: postgresSection,
  tools: [fakeTool('query'), fakeTool('list_tables'), fakeTool('describe_table'), fakeTool('explain')],
  secretRefs: (section) =>
    Object.entries(section.databases).map(([name, db]) => ({
      name: db.connection,
      path: ['databases', name, 'connection'],
    })),
});

export const fakeServers = [fakeGit, fakeGithub, fakePostgres, fakeHttp] as unknown as ServerDefinition[];
