// Named secrets from airlock.yaml: read from the broker's environment, a file or the OS keychain,
// checked against the secret's `teams:` list, and registered with the redactor the moment they
// are read so no later output can carry them. Errors name the secret and the cause, never the value.
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { createPrivateKey } from 'node:crypto';
import type { Redactor } from './redact.js';
import { MIN_REDACTABLE_LENGTH } from './redact.js';
import type { SecretConfig, ValueSource } from './config.js';
import { ToolError, type SecretAccess } from '../tool.js';
import { KEYCHAIN_SERVICE, KeychainUnavailableError, osKeychain, type Keychain } from './keychain.js';
import { GithubAppTokens, type GithubTokenScope } from './github-app.js';

export class SecretError extends Error {
  constructor(
    /** The secret's name (never its value). */
    readonly secret: string,
    message: string,
  ) {
    super(message);
    this.name = 'SecretError';
  }
}

/**
 * What the agent is told when a secret does not resolve: its name at most. Where the operator
 * keeps it (an environment variable, a host path, a keychain account) is host detail, kept in
 * `operatorDetail` for the log and the audit record.
 */
export class CredentialUnavailableError extends ToolError {
  constructor(
    readonly secret: string,
    readonly operatorDetail: string,
  ) {
    super(`credential "${secret}" is unavailable (ask the operator)`, 'upstream');
    this.name = 'CredentialUnavailableError';
  }
}

/** How long a read value is reused, so rotation works without a restart but a call does not hit the keychain each time. */
export const DEFAULT_CACHE_TTL_MS = 30_000;

/** Larger files are not credentials; reading them whole would only cost memory. */
export const MAX_SECRET_FILE_BYTES = 1024 * 1024;

export interface SecretStoreOptions {
  keychain?: Keychain;
  env?: NodeJS.ProcessEnv;
  /** 0 disables caching. */
  cacheTtlMs?: number;
  /** Called once per distinct warning met by resolve() (loose file mode, value too short to redact). */
  onWarning?: (warning: string) => void;
  /** The clock of the GitHub App token cache (tests move it past a token's expiry). */
  now?: () => number;
}

export interface SecretCheck {
  name: string;
  ok: boolean;
  error?: string;
  warning?: string;
}

interface ReadValue {
  value: string;
  warnings: string[];
}

interface CacheEntry {
  read: Promise<ReadValue>;
  expires: number;
}

/** Strips exactly one trailing newline (`\n` or `\r\n`): editors add one, a value never ends in one. */
export function trimOneNewline(text: string): string {
  if (text.endsWith('\r\n')) return text.slice(0, -2);
  if (text.endsWith('\n')) return text.slice(0, -1);
  return text;
}

function errorCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'unknown error';
}

export class SecretStore {
  private readonly keychain: Keychain;
  private readonly env: NodeJS.ProcessEnv;
  private readonly ttlMs: number;
  private readonly onWarning: ((warning: string) => void) | undefined;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly warned = new Set<string>();
  /** Installation tokens minted for githubApp secrets; every one is registered for redaction first. */
  private readonly appTokens: GithubAppTokens;

  constructor(
    private readonly secrets: Record<string, SecretConfig>,
    private readonly redactor: Redactor,
    opts: SecretStoreOptions = {},
  ) {
    this.keychain = opts.keychain ?? osKeychain;
    this.env = opts.env ?? process.env;
    this.ttlMs = opts.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS;
    this.onWarning = opts.onWarning;
    this.appTokens = new GithubAppTokens({
      onToken: (token) => this.redactor.add(token),
      onExpired: (token) => this.redactor.remove(token),
      now: opts.now,
    });
  }

  has(name: string): boolean {
    return Object.hasOwn(this.secrets, name);
  }

  mayUse(name: string, team: string): boolean {
    const config = this.config(name);
    if (!config) return false;
    return config.teams === undefined || config.teams.includes(team);
  }

  /** The value of `name` for `team`. Checks the team's right first; the value is registered with the redactor before it is returned. */
  async resolve(name: string, team: string): Promise<string> {
    const config = this.config(name);
    if (!config) throw new SecretError(name, `unknown secret "${name}"`);
    if (!this.mayUse(name, team))
      throw new SecretError(name, `secret "${name}" may not be used by team "${team}"`);
    if ('githubApp' in config) {
      throw new SecretError(
        name,
        `secret "${name}" is a GitHub App: it yields installation tokens for the github server ` +
          `and for git workspaces, not a value for other uses`,
      );
    }
    const { value, warnings } = await this.cached(name, config);
    for (const w of warnings) this.warnOnce(w);
    return value;
  }

  /**
   * A value for the broker's own use (telemetry headers, the central audit or fleet limit
   * connection, the policy repository's credential): no team asks for it, so `teams` does not apply. Registered with the redactor
   * like every value.
   */
  async brokerValue(name: string): Promise<string> {
    const config = this.config(name);
    if (!config) throw new SecretError(name, `unknown secret "${name}"`);
    if ('githubApp' in config) throw new SecretError(name, `secret "${name}" is a GitHub App, not a value`);
    const { value, warnings } = await this.cached(name, config);
    for (const w of warnings) this.warnOnce(w);
    return value;
  }

  /**
   * A GitHub credential for `team`: a token secret's value as is, or for a githubApp secret an
   * installation token minted for exactly `scope()` (asked for only then) and cached until
   * shortly before it expires.
   */
  async githubToken(name: string, team: string, scope: () => GithubTokenScope): Promise<string> {
    const config = this.config(name);
    if (!config || !('githubApp' in config) || !this.mayUse(name, team)) return this.resolve(name, team);
    const { value: privateKey, warnings } = await this.cached(name, config);
    for (const w of warnings) this.warnOnce(w);
    const app = config.githubApp;
    return this.appTokens.token(
      { secret: name, appId: String(app.appId), installationId: String(app.installationId), privateKey },
      scope(),
    );
  }

  /** A team's view for tools: a secret that does not resolve throws CredentialUnavailableError. */
  forTeam(team: string): SecretAccess {
    const unavailable = (name: string, err: unknown) =>
      new CredentialUnavailableError(name, err instanceof Error ? err.message : String(err));
    return {
      get: async (name: string) => {
        try {
          return await this.resolve(name, team);
        } catch (err) {
          throw unavailable(name, err);
        }
      },
      githubToken: async (name, scope) => {
        try {
          return await this.githubToken(name, team, scope);
        } catch (err) {
          // A refusal from GitHub's token endpoint is the upstream's answer, not a missing secret.
          if (err instanceof SecretError || err instanceof KeychainUnavailableError)
            throw unavailable(name, err);
          throw err;
        }
      },
    };
  }

  /**
   * Reads every configured secret (a GitHub App's private key) without regard to teams, for
   * `airlock doctor` and for registering every value with the redactor at startup. Never returns values.
   */
  async resolveAll(): Promise<SecretCheck[]> {
    return Promise.all(
      Object.keys(this.secrets).map(async (name): Promise<SecretCheck> => {
        const config = this.secrets[name]!;
        try {
          const { value, warnings } = await this.cached(name, config);
          if ('githubApp' in config) {
            try {
              createPrivateKey(value);
            } catch {
              return {
                name,
                ok: false,
                error: `secret "${name}": the GitHub App private key is not a valid PEM private key`,
              };
            }
          }
          return warnings.length > 0 ? { name, ok: true, warning: warnings.join('; ') } : { name, ok: true };
        } catch (err) {
          return { name, ok: false, error: err instanceof Error ? err.message : String(err) };
        }
      }),
    );
  }

  private config(name: string): SecretConfig | undefined {
    return this.has(name) ? this.secrets[name] : undefined;
  }

  private warnOnce(warning: string): void {
    if (this.warned.has(warning)) return;
    this.warned.add(warning);
    this.onWarning?.(warning);
  }

  /** One read per secret per TTL, shared by concurrent callers; failures are not cached. */
  private cached(name: string, config: SecretConfig): Promise<ReadValue> {
    const now = Date.now();
    let entry = this.cache.get(name);
    if (!entry || entry.expires <= now) {
      const source: ValueSource = 'githubApp' in config ? config.githubApp.privateKey : config;
      const read = this.read(name, source).then((r) => {
        if ('githubApp' in config) this.registerPemBody(r.value);
        this.registerUrlPassword(r.value);
        if (!this.redactor.add(r.value)) {
          r.warnings.push(
            `secret "${name}": the value is shorter than ${MIN_REDACTABLE_LENGTH} characters, so it cannot be redacted from output`,
          );
        }
        return r;
      });
      const created: CacheEntry = { read, expires: this.ttlMs > 0 ? now + this.ttlMs : 0 };
      if (this.ttlMs > 0) this.cache.set(name, created);
      read.catch(() => {
        if (this.cache.get(name) === created) this.cache.delete(name);
      });
      entry = created;
    }
    // Each caller gets its own warnings list (resolveAll adds to it).
    return entry.read.then((r) => ({ value: r.value, warnings: [...r.warnings] }));
  }

  /**
   * A connection URL (postgres://user:password@host/db) leaks its password on its own as often
   * as whole (a driver error, a log line): the password, raw and decoded, is registered too.
   */
  private registerUrlPassword(value: string): void {
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*?:([^@/?#]*)@/i.exec(value.trim());
    if (!m?.[1]) return;
    this.redactor.add(m[1]);
    try {
      this.redactor.add(decodeURIComponent(m[1]));
    } catch {
      // Not valid percent-encoding: the raw form is registered.
    }
  }

  /**
   * A private key leaks in pieces or re-wrapped as often as whole: each base64 line of the PEM
   * body, and the body joined into one line, are registered too.
   */
  private registerPemBody(pem: string): void {
    const body = pem
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('-----') && !line.includes(':'));
    for (const line of body) if (line.length >= 16) this.redactor.add(line);
    if (body.length > 1) this.redactor.add(body.join(''));
  }

  private async read(name: string, source: ValueSource): Promise<ReadValue> {
    if ('env' in source) {
      const value = this.env[source.env];
      if (value === undefined)
        throw new SecretError(name, `secret "${name}": environment variable ${source.env} is not set`);
      if (value === '')
        throw new SecretError(name, `secret "${name}": environment variable ${source.env} is empty`);
      return { value, warnings: [] };
    }
    if ('file' in source) return this.readFile(name, source.file);
    return this.readKeychain(name, source.keychain);
  }

  private async readFile(name: string, path: string): Promise<ReadValue> {
    const unreadable = (cause: string) =>
      new SecretError(name, `secret "${name}": file ${path} is not readable (${cause})`);
    let handle;
    try {
      // O_NONBLOCK so a FIFO in place of the file fails the type check below instead of hanging.
      handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    } catch (err) {
      throw unreadable(errorCode(err));
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw unreadable('not a regular file');
      if (stat.size > MAX_SECRET_FILE_BYTES) throw unreadable(`larger than ${MAX_SECRET_FILE_BYTES} bytes`);
      let text: string;
      try {
        text = await handle.readFile({ encoding: 'utf8' });
      } catch (err) {
        throw unreadable(errorCode(err));
      }
      const value = trimOneNewline(text);
      if (value === '') throw new SecretError(name, `secret "${name}": file ${path} is empty`);
      const warnings: string[] = [];
      if ((stat.mode & 0o077) !== 0) {
        const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
        warnings.push(
          `secret "${name}": file ${path} is accessible to group or others (mode ${mode}); chmod 600 it`,
        );
      }
      return { value, warnings };
    } finally {
      await handle.close();
    }
  }

  private async readKeychain(name: string, account: string): Promise<ReadValue> {
    let value: string | undefined;
    try {
      value = await this.keychain.get(account);
    } catch (err) {
      const cause =
        err instanceof KeychainUnavailableError ? err.message : `OS keychain error: ${errorCode(err)}`;
      throw new SecretError(name, `secret "${name}": ${cause}`);
    }
    const where = `(service "${KEYCHAIN_SERVICE}", account "${account}")`;
    if (value === undefined)
      throw new SecretError(name, `secret "${name}": not found in the OS keychain ${where}`);
    if (value === '')
      throw new SecretError(name, `secret "${name}": the OS keychain entry ${where} is empty`);
    return { value, warnings: [] };
  }
}

/** A SecretCheck's text without its `secret "NAME": ` lead, for places that already name the secret. */
export function withoutSecretName(name: string, text: string): string {
  return text.split(`secret "${name}": `).join('');
}
