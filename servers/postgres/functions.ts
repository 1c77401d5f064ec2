// The reviewed allowlist of built-in (pg_catalog) functions an agent's SQL may call.
//
// This is an ALLOWLIST on purpose: a denylist of "dangerous functions" is what other Postgres MCP
// servers got wrong (query_to_xml reads any table past table rules, pg_read_binary_file reads the
// server's files, set_config outlives the transaction). A function is here only if it computes
// a value from its arguments (or the clock, or the statement's own rows) and can neither read a
// relation by name, touch the file system or network, signal or inspect other sessions, change
// settings or locks, nor run SQL given as text. Anything else needs the database's `functions`
// globs in the policy, which name it explicitly.
//
// Deliberately absent (examples, not a denylist): query_to_xml / table_to_xml / cursor_to_xml /
// schema_to_xml / database_to_xml and their *_and_xmlschema forms (run SQL or read tables by
// name), ts_stat / ts_rewrite with a query text (run SQL), pg_read_file / pg_read_binary_file /
// pg_ls_* / pg_stat_file (server files), lo_* (large objects), dblink* (network), pg_sleep*
// (holds a connection), pg_cancel_backend / pg_terminate_backend / pg_reload_conf /
// pg_rotate_logfile (other sessions, server), set_config / current_setting (settings),
// pg_advisory_* / pg_try_advisory_* (session locks), nextval / setval (sequences), pg_notify,
// txid_* / pg_current_xact_id (assign transaction ids), pg_relation_size and friends (sizes of
// relations the table rules may hide), pg_input_is_valid (runs any type's input function),
// has_*_privilege and pg_get_*def (catalog introspection, available to describe_table instead).
//
// Names are matched exactly (Postgres folds unquoted names to lower case); an unqualified call
// also passes only if no schema on the connection's search_path has a function of that name
// that the policy does not allow (a user-defined `public.lower` would otherwise be chosen).

/** Splits a whitespace-separated list (the lists below read as data, one category each). */
const words = (list: string): string[] => list.split(/\s+/).filter(Boolean);

const AGGREGATES = words(`
  count sum avg min max bool_and bool_or every bit_and bit_or bit_xor string_agg array_agg
  json_agg jsonb_agg json_object_agg jsonb_object_agg json_agg_strict jsonb_agg_strict
  json_object_agg_strict jsonb_object_agg_strict json_object_agg_unique jsonb_object_agg_unique
  json_object_agg_unique_strict jsonb_object_agg_unique_strict json_arrayagg json_objectagg xmlagg
  any_value stddev stddev_pop stddev_samp variance var_pop var_samp corr covar_pop covar_samp
  regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy
  percentile_cont percentile_disc mode range_agg range_intersect_agg grouping
`);

const WINDOW = words(`
  row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
  nth_value
`);

const MATH = words(`
  abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod pi
  power pow radians round scale sign sqrt trim_scale trunc width_bucket random random_normal acos
  acosd asin asind atan atand atan2 atan2d cos cosd cot cotd sin sind tan tand sinh cosh tanh
  asinh acosh atanh erf erfc numeric_inc greatest least int4 int8 int2 float4 float8 numeric
  bit_count get_bit get_byte set_bit set_byte
`);

const STRING = words(`
  ascii bit_length btrim char_length character_length chr concat concat_ws format initcap left
  length lower lpad ltrim md5 normalize is_normalized octet_length overlay position quote_ident
  quote_literal quote_nullable regexp_count regexp_instr regexp_like regexp_match regexp_matches
  regexp_replace regexp_split_to_array regexp_split_to_table regexp_substr repeat replace reverse
  right rpad rtrim split_part starts_with string_to_array string_to_table strpos substr substring
  to_ascii to_hex to_bin to_oct translate unistr upper casefold text varchar bpchar name char
  similar_to_escape similar_escape like_escape textlen encode decode convert convert_from
  convert_to sha224 sha256 sha384 sha512 crc32 crc32c pg_collation_for to_char to_number to_date
  to_timestamp bool gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp uuid_extract_version
  ts_headline to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank
  ts_rank_cd setweight strip numnode querytree tsvector_to_array array_to_tsvector ts_delete
  ts_filter length get_current_ts_config
`);

const DATETIME = words(`
  age clock_timestamp current_date current_time current_timestamp date_add date_bin date_part
  date_subtract date_trunc extract isfinite justify_days justify_hours justify_interval localtime
  localtimestamp make_date make_interval make_time make_timestamp make_timestamptz now
  statement_timestamp timeofday transaction_timestamp timezone overlaps date time timetz timestamp
  timestamptz interval generate_series to_timestamp
`);

const JSON_FUNCTIONS = words(`
  to_json to_jsonb array_to_json row_to_json json_build_array jsonb_build_array json_build_object
  jsonb_build_object json_object jsonb_object json_array_length jsonb_array_length json_each
  jsonb_each json_each_text jsonb_each_text json_extract_path jsonb_extract_path
  json_extract_path_text jsonb_extract_path_text json_object_keys jsonb_object_keys
  json_populate_record jsonb_populate_record jsonb_populate_record_valid json_populate_recordset
  jsonb_populate_recordset json_to_record jsonb_to_record json_to_recordset jsonb_to_recordset
  json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_path_exists
  jsonb_path_match jsonb_path_query jsonb_path_query_array jsonb_path_query_first
  jsonb_path_exists_tz jsonb_path_match_tz jsonb_path_query_tz jsonb_path_query_array_tz
  jsonb_path_query_first_tz jsonb_pretty json_typeof jsonb_typeof json_array_elements
  jsonb_array_elements json_array_elements_text jsonb_array_elements_text json_scalar
  json_serialize json jsonb json_array jsonb_concat jsonb_contains jsonb_exists jsonb_exists_any
  jsonb_exists_all jsonb_delete jsonb_delete_path
`);

const ARRAY = words(`
  array_append array_cat array_dims array_fill array_length array_lower array_ndims array_position
  array_positions array_prepend array_remove array_replace array_reverse array_sample
  array_shuffle array_sort array_to_string array_upper cardinality trim_array unnest
  generate_subscripts
`);

const RANGES_AND_GEOMETRY = words(`
  lower upper isempty lower_inc upper_inc lower_inf upper_inf range_merge multirange int4range
  int8range numrange tsrange tstzrange daterange int4multirange int8multirange nummultirange
  tsmultirange tstzmultirange datemultirange area center diameter height width radius isclosed
  isopen npoints pclose popen point box circle line lseg path polygon bound_box
`);

const NETWORK_VALUES = words(`
  abbrev broadcast family host hostmask inet_merge inet_same_family masklen netmask network
  set_masklen macaddr8_set7bit trunc
`);

const CONDITIONAL_AND_MISC = words(`
  coalesce nullif num_nulls num_nonnulls pg_typeof version current_database current_catalog
  current_schema current_schemas current_user current_role session_user user format_type
  pg_column_size pg_size_pretty pg_size_bytes to_regclass to_regtype to_regproc to_regnamespace
  xmlcomment xmlconcat xmlelement xmlforest xmlpi xmlroot xmlexists xml_is_well_formed
  xml_is_well_formed_document xml_is_well_formed_content xpath xpath_exists xmlparse xmlserialize
  xmltext now
`);

/** TABLESAMPLE methods that ship with Postgres. */
export const SAFE_TABLESAMPLE_METHODS: ReadonlySet<string> = new Set(['system', 'bernoulli']);

/** Every built-in (pg_catalog) function name an agent may call without a policy glob. */
export const SAFE_BUILTIN_FUNCTIONS: ReadonlySet<string> = new Set([
  ...AGGREGATES,
  ...WINDOW,
  ...MATH,
  ...STRING,
  ...DATETIME,
  ...JSON_FUNCTIONS,
  ...ARRAY,
  ...RANGES_AND_GEOMETRY,
  ...NETWORK_VALUES,
  ...CONDITIONAL_AND_MISC,
]);

/**
 * Relations no policy can open: they hold password hashes, user-mapping options (foreign-server
 * passwords), large objects, or other sessions' query texts (which can carry passwords).
 * Matched on schema.name for pg_catalog/information_schema, on the name alone for extensions.
 */
export const CREDENTIAL_RELATIONS: ReadonlySet<string> = new Set([
  'pg_catalog.pg_authid',
  'pg_catalog.pg_shadow',
  'pg_catalog.pg_user_mapping',
  'pg_catalog.pg_user_mappings',
  'pg_catalog.pg_largeobject',
  'pg_catalog.pg_largeobject_metadata',
  'pg_catalog.pg_stat_activity',
  'pg_catalog.pg_file_settings',
  'pg_catalog.pg_hba_file_rules',
  'pg_catalog.pg_ident_file_mappings',
  'information_schema.user_mapping_options',
  'information_schema.user_mappings',
]);

/** Extension views with other sessions' query texts, in whatever schema the extension lives. */
export const CREDENTIAL_RELATION_NAMES: ReadonlySet<string> = new Set([
  'pg_stat_statements',
  'pg_stat_statements_info',
  'pg_authid',
  'pg_shadow',
  'pg_user_mapping',
  'pg_user_mappings',
  'pg_largeobject',
]);

/** Schemas whose relations are system catalogs (readable unless `catalogs: false`). */
export const CATALOG_SCHEMAS: ReadonlySet<string> = new Set(['pg_catalog', 'information_schema', 'pg_toast']);
