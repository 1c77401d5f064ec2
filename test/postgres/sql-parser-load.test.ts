// The SQL parser (WebAssembly) loads on the first postgres call, not at import: before that,
// analyzeSql refuses to guess (an error that is not a SqlRefusal, so no caller can read it as
// "invalid SQL" or "no statement class"); concurrent first calls share one load.
import { expect, it } from 'vitest';
import { analyzeSql, loadSqlParser, SqlRefusal } from '../../servers/postgres/sql.js';
import { queryTool } from '../../servers/postgres/tools.js';

it('analyzeSql before the parser is loaded throws an internal error, not a refusal', () => {
  let thrown: unknown;
  try {
    analyzeSql('SELECT 1');
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(Error);
  expect(thrown).not.toBeInstanceOf(SqlRefusal);
  expect((thrown as Error).message).toMatch(/SQL parser is not loaded/);
});

it('an approval condition on the statement class does not read "not loaded" as no match', () => {
  const statements = queryTool.approvalConditions!.statements!;
  expect(() => statements.matches(['insert'], { database: 'db', sql: 'INSERT INTO t VALUES (1)' })).toThrow(
    /SQL parser is not loaded/,
  );
});

it('concurrent first loads share one load; afterwards statements parse', async () => {
  const first = loadSqlParser();
  const second = loadSqlParser();
  expect(second).toBe(first);
  await Promise.all([first, second]);
  expect(analyzeSql('SELECT a FROM t').statementClass).toBe('select');
  expect(() => analyzeSql('SELECT 1; SELECT 2')).toThrow(SqlRefusal);
  // The query tool's prepare is that same load.
  expect(queryTool.prepare).toBe(loadSqlParser);
  expect(
    queryTool.approvalConditions!.statements!.matches(['insert'], {
      database: 'db',
      sql: 'INSERT INTO t VALUES (1)',
    }),
  ).toBe(true);
});
