// The `secrets:` map of airlock.yaml: where each named secret comes from and which teams may use it.
import { z } from 'zod';

const SECRET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const secretNameSchema = z
  .string()
  .regex(SECRET_NAME, 'secret names use letters, digits, ".", "_" and "-"');

const teamsField = {
  teams: z
    .array(z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'team names match [a-z0-9][a-z0-9-]*'))
    .min(1)
    .optional()
    .describe('Teams allowed to use this secret; absent means every team.'),
};

/** Where a plain value comes from: an environment variable of the broker, a file, or the OS keychain. */
export const valueSourceSchema = z.union([
  z.object({ env: z.string().min(1).describe('Environment variable of the broker process') }).strict(),
  z
    .object({ file: z.string().min(1).describe('File holding the value (trailing newline trimmed)') })
    .strict(),
  z.object({ keychain: z.string().min(1).describe('OS keychain account under service "airlock"') }).strict(),
]);

export const githubAppSchema = z
  .object({
    appId: z.union([z.number().int().positive(), z.string().regex(/^\d+$/)]),
    installationId: z.union([z.number().int().positive(), z.string().regex(/^\d+$/)]),
    privateKey: valueSourceSchema,
  })
  .strict();

export const secretConfigSchema = z.union([
  z.object({ env: z.string().min(1), ...teamsField }).strict(),
  z.object({ file: z.string().min(1), ...teamsField }).strict(),
  z.object({ keychain: z.string().min(1), ...teamsField }).strict(),
  z.object({ githubApp: githubAppSchema, ...teamsField }).strict(),
]);

export type SecretConfig = z.output<typeof secretConfigSchema>;
export type ValueSource = z.output<typeof valueSourceSchema>;
