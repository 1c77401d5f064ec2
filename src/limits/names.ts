// Names shared by the fleet store and its callers, in a file that loads nothing (not pg): the
// broker reads them whether or not its limits are fleet-wide.
export const LIMITS_TABLE = 'airlock_limits';
/** Key of the model token budget row (rate limits use `rate:<server>/<tool>`). */
export const MODEL_TOKENS_KEY = 'model.tokens';
