// Fleet-wide limits (`limits: { store: postgres }` in airlock.yaml): the broker's view of the
// PostgreSQL counters (src/limits/postgres-store.ts). The pipeline asks it for rateLimit tokens
// and the model proxy for dailyTokenBudget reservations. Any failure of the store — no answer
// within timeoutMs, refused connection, missing table, a secret that does not resolve — is a
// FleetLimitError, and the caller refuses the call: a fleet limit never quietly becomes a
// per-host one. Tools without a rateLimit never reach this file.
import type { AirlockConfig } from '../config/airlock-yaml.js';
import type { Logger } from '../log.js';
import type { RateDecision, RateLimitSpec } from '../policy/ratelimit.js';
import type { SecretStore } from '../secrets/store.js';
import { LIMITS_TABLE, MODEL_TOKENS_KEY } from './names.js';
import type { PostgresLimitStore } from './postgres-store.js';

/** The store did not answer (or could not); the message always starts with "fleet limit store unreachable". */
export class FleetLimitError extends Error {
  override name = 'FleetLimitError';
  constructor(readonly detail: string) {
    super(
      `fleet limit store unreachable (${detail}); calls under a fleet-wide limit are refused until it answers`,
    );
  }
}

/** A token budget reservation: settle it with what the request really cost. */
export type TokenReservation =
  { ok: true; settle(tokens: number): Promise<void> } | { ok: false; used: number };

/** What the model proxy needs for a fleet-wide dailyTokenBudget. */
export interface FleetTokenBudget {
  reserve(team: string, budget: number, tokens: number): Promise<TokenReservation>;
}

/** What the call pipeline asks for rateLimit tokens: this host's counters, or the fleet's. */
export interface SharedRateLimiter {
  readonly scope: 'host' | 'fleet';
  /** `key` is `<server>/<tool>`. Throws when the counters cannot be reached: the call is refused. */
  take(team: string, key: string, spec: RateLimitSpec): Promise<RateDecision>;
}

export class FleetLimits implements SharedRateLimiter, FleetTokenBudget {
  readonly scope = 'fleet';
  private store: { url: string; store: Promise<PostgresLimitStore> } | undefined;
  private closed = false;

  private constructor(
    private readonly secretName: string,
    private readonly secrets: SecretStore,
    readonly timeoutMs: number,
    private readonly log: Logger,
  ) {}

  /**
   * The fleet store of `config`, or undefined when limits are local. Connects on first use; the
   * URL is the broker's own secret (SecretStore.brokerValue: no team's `teams:` applies).
   */
  static fromConfig(config: AirlockConfig, secrets: SecretStore, log: Logger): FleetLimits | undefined {
    const limits = config.limits;
    if (limits?.store !== 'postgres' || limits.connection === undefined) return undefined;
    return new FleetLimits(limits.connection, secrets, limits.timeoutMs, log.child({ component: 'limits' }));
  }

  async take(team: string, key: string, spec: RateLimitSpec): Promise<RateDecision> {
    const taken = await this.run((s) => s.takeToken(team, `rate:${key}`, spec));
    if (taken.allowed) return { ok: true };
    return { ok: false, retryAfterMs: Math.ceil(((1 - taken.tokens) * spec.periodMs) / spec.count) };
  }

  async reserve(team: string, budget: number, tokens: number): Promise<TokenReservation> {
    const r = await this.run((s) => s.reserve(team, MODEL_TOKENS_KEY, budget, tokens));
    if (!r.allowed) return { ok: false, used: r.used };
    return {
      ok: true,
      settle: async (actual: number) => {
        if (actual === tokens) return;
        // A reservation that cannot be settled stays charged: the budget errs on the team's side.
        await this.run((s) => s.adjust(team, MODEL_TOKENS_KEY, r.day, actual - tokens)).catch((err: Error) =>
          this.log.warn({ team, err: err.message }, 'could not settle a token reservation'),
        );
      },
    };
  }

  /** Whether the counter table is there for this role (`airlock doctor`). */
  readiness(): Promise<'ready' | 'missing' | 'no-privilege'> {
    return this.run((s) => s.readiness());
  }

  /** Creates the counter table (`airlock limits migrate`). */
  migrate(): Promise<void> {
    return this.run((s) => s.migrate(), 30_000);
  }

  async close(): Promise<void> {
    this.closed = true;
    const current = this.store;
    this.store = undefined;
    await current?.store.then((s) => s.close()).catch(() => undefined);
  }

  /** One store operation, bounded by timeoutMs whatever it waits on; every failure is a FleetLimitError. */
  private async run<T>(
    op: (store: PostgresLimitStore) => Promise<T>,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    if (this.closed) throw new FleetLimitError('the broker is shutting down');
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new FleetLimitError(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.connected().then(op), deadline]);
    } catch (err) {
      throw err instanceof FleetLimitError ? err : new FleetLimitError(describe(err));
    } finally {
      clearTimeout(timer);
    }
  }

  /** The store for the secret's current value (a rotated URL gets a new pool). */
  private async connected(): Promise<PostgresLimitStore> {
    let url: string;
    try {
      url = (await this.secrets.brokerValue(this.secretName)).trim();
    } catch {
      throw new FleetLimitError(`secret "${this.secretName}" does not resolve; see airlock doctor`);
    }
    if (!/^postgres(ql)?:\/\//i.test(url))
      throw new FleetLimitError(`the value of secret "${this.secretName}" is not a postgres:// URL`);
    if (this.store?.url === url) return this.store.store;
    // Loaded on first use: a broker with local limits never loads pg for them.
    const { PostgresLimitStore } = await import('./postgres-store.js');
    if (this.store?.url === url) return this.store.store;
    const previous = this.store;
    // pg is loaded on first use: a broker with local limits (and `airlock stdio`) never loads it.
    const store = import('pg').then(
      ({ default: driver }) =>
        new PostgresLimitStore(driver, url, this.timeoutMs, (err) =>
          this.log.warn({ code: err.code }, 'idle connection to the fleet limit store failed'),
        ),
    );
    this.store = { url, store };
    if (previous) void previous.store.then((s) => s.close()).catch(() => undefined);
    return store;
  }
}

/** pg's message, or its code: they name hosts, roles and tables, never the password. */
function describe(err: unknown): string {
  const e = err as { code?: string; message?: string } | undefined;
  if (e?.code === '42P01') return `table ${LIMITS_TABLE} does not exist; run airlock limits migrate`;
  const message = e?.message?.trim() || String(err);
  return e?.code && !message.includes(e.code) ? `${e.code}: ${message}` : message;
}
