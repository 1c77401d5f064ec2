// Several statements in one round trip to Postgres: one write of extended-protocol messages
// ended by a single Sync, so the server answers them all in one go and there is one
// ReadyForQuery. A call's control statements (BEGIN and its SET LOCALs, ROLLBACK and the session
// reset) ride along with the broker's name lookup or with the agent's statement instead of
// costing a round trip (and a socket write, which is most of a small call's CPU) of their own.
//
// A Batch is a pg "submittable" (what pg-cursor and pg-query-stream pass to client.query): it
// writes its messages with the connection's parse/bind/describe/execute/flush/sync, receives the
// replies through the handle* callbacks, and ends at its ReadyForQuery. Only the main statement
// has a Describe, so only its rows arrive with a RowDescription; the rows any control statement
// returns (pg_advisory_unlock_all) are ignored. After an error the server skips to the Sync, so
// nothing after a failed statement runs; the error says in which part it happened.

/** The parts of pg's Connection a submittable writes with (pg-cursor uses the same). */
interface Wire {
  stream: { cork?(): void; uncork?(): void };
  parse(msg: { text: string; name?: string; types?: number[] }): void;
  bind(msg: { statement?: string; values?: Array<string | null> }): void;
  describe(msg: { type: 'P'; name: string }): void;
  execute(msg: { rows?: number }): void;
  flush(): void;
  sync(): void;
  sendCopyFail(message: string): void;
}

export interface Field {
  name: string;
  dataTypeID: number;
}

export interface MainStatement {
  text: string;
  /** Text-format parameters (null for SQL NULL). */
  values: Array<string | null>;
  /** A per-connection prepared statement: its name, and whether this connection has parsed it. */
  prepared?: Prepared;
  /** Rows kept at most; one more is fetched to know whether the result was cut. */
  maxRows: number;
  /** Bytes of row data kept at most (fields plus 4 bytes each, 16 per row). */
  maxBytes: number;
  /**
   * Rows per Execute (a page): fetching stops at the page where a cap is reached, so the server
   * never produces the rest. 0: one Execute for everything (writes, whose command tag counts the
   * changed rows only once they all ran); the caps then only bound what is kept.
   */
  pageRows: number;
  /** Converts a field's text to its value as it is kept. */
  render: (raw: string | null, typeOid: number) => unknown;
}

export interface BatchResult {
  fields: Field[];
  rows: unknown[][];
  /** The main statement's command tag (`SELECT 3`, `INSERT 0 1`); '' when it was cut short. */
  command: string;
  truncated: boolean;
}

/** Where a failing statement was: before the main one, the main one, or after it. */
export type BatchPart = 'before' | 'main' | 'after';

export interface BatchError extends Error {
  airlockBatchPart?: BatchPart;
}

/** A statement run for its effect (or its error), not its rows: SQL text, or one with parameters. */
export type ControlStatement = string | { text: string; values: Array<string | null>; prepared: Prepared };

/** A named statement: parsed once per connection, with its parameters' type OIDs declared. */
export interface Prepared {
  name: string;
  parsed: boolean;
  types?: number[];
}

export interface BatchSpec {
  /** Statements whose rows are not read run first (BEGIN, SET LOCAL, a guard…). */
  before?: readonly ControlStatement[];
  main?: MainStatement;
  /** Statements run after the main one, when it succeeded (ROLLBACK and the reset…). */
  after?: readonly ControlStatement[];
  /**
   * The connection's prepared statement names: a named statement this batch parses is added
   * once it ran, so a batch cut short by an error never claims a Parse the server skipped.
   */
  parsedNames?: Set<string>;
}

/** Sizes pages evenly, at most `maxPage` rows each, so maxRows + 1 rows take the fewest Executes. */
export function pageRowsFor(maxRows: number, maxPage: number): number {
  const wanted = maxRows + 1;
  return Math.ceil(wanted / Math.ceil(wanted / maxPage));
}

export class Batch {
  private readonly before: readonly ControlStatement[];
  private readonly after: readonly ControlStatement[];
  private readonly main: MainStatement | undefined;
  private readonly parsedNames: Set<string> | undefined;
  /** By stage (before…, main, after…): the named statement this batch parses there, if any. */
  private readonly parsing: Array<Prepared | undefined>;
  /** Index of the statement whose replies arrive now: before…, main, after…. */
  private stage = 0;
  private synced = false;
  private requested = 0;
  private kept = 0;
  private bytes = 0;
  private settled = false;
  private readonly result: BatchResult = { fields: [], rows: [], command: '', truncated: false };

  constructor(
    spec: BatchSpec,
    private readonly callback: (err: BatchError | null, result?: BatchResult) => void,
  ) {
    this.before = spec.before ?? [];
    this.after = spec.after ?? [];
    this.main = spec.main;
    this.parsedNames = spec.parsedNames;
    const named = (stmt: ControlStatement) => (typeof stmt === 'string' ? undefined : stmt.prepared);
    this.parsing = [
      ...this.before.map(named),
      ...(this.main ? [this.main.prepared] : []),
      ...this.after.map(named),
    ].map((p) => (p && !p.parsed ? p : undefined));
  }

  /** The statement at `stage` ran: if it was parsed under a name here, the connection has it now. */
  private ran(stage: number): void {
    const parsed = this.parsing[stage];
    if (parsed) this.parsedNames?.add(parsed.name);
  }

  private get mainStage(): number {
    return this.main ? this.before.length : -1;
  }

  private part(): BatchPart {
    if (this.stage < this.before.length) return 'before';
    return this.stage === this.mainStage ? 'main' : 'after';
  }

  private statements(wire: Wire, list: readonly ControlStatement[]): void {
    for (const stmt of list) {
      if (typeof stmt === 'string') {
        wire.parse({ text: stmt });
        wire.bind({});
      } else {
        const { name, parsed, types } = stmt.prepared;
        if (!parsed) wire.parse({ text: stmt.text, name, ...(types ? { types } : {}) });
        wire.bind({ statement: name, values: stmt.values });
      }
      wire.execute({});
    }
  }

  /** Ends the group: the statements after the main one, then the Sync. */
  private finish(wire: Wire): void {
    this.statements(wire, this.after);
    wire.sync();
    this.synced = true;
  }

  /** Asks for the main statement's next page; the group ends with the page that reaches a cap. */
  private page(wire: Wire): void {
    const m = this.main!;
    wire.execute(m.pageRows ? { rows: m.pageRows } : {});
    this.requested += m.pageRows;
    if (!m.pageRows || this.requested >= m.maxRows + 1) this.finish(wire);
    else wire.flush();
  }

  /** Writes that go out together (one socket write). */
  private corked(wire: Wire, write: () => void): void {
    wire.stream.cork?.();
    try {
      write();
    } finally {
      wire.stream.uncork?.();
    }
  }

  /** Called by pg's client when this batch's turn comes: everything goes out in one write. */
  submit(wire: Wire): null {
    this.corked(wire, () => {
      this.statements(wire, this.before);
      const m = this.main;
      if (!m) return this.finish(wire);
      const name = m.prepared?.name;
      const types = m.prepared?.types;
      if (!m.prepared?.parsed)
        wire.parse({ text: m.text, ...(name ? { name } : {}), ...(types ? { types } : {}) });
      wire.bind({ ...(name ? { statement: name } : {}), values: m.values });
      wire.describe({ type: 'P', name: '' });
      this.page(wire);
    });
    return null;
  }

  handleRowDescription(msg: { fields: Field[] }): void {
    if (this.stage === this.mainStage)
      this.result.fields = msg.fields.map((f) => ({ name: f.name, dataTypeID: f.dataTypeID }));
  }

  handleDataRow(msg: { fields: Array<string | null> }): void {
    if (this.stage !== this.mainStage || this.result.truncated) return;
    const m = this.main!;
    let size = 16;
    for (const f of msg.fields) size += f === null ? 4 : f.length + 4;
    if (this.kept >= m.maxRows || this.bytes + size > m.maxBytes) {
      this.result.truncated = true;
      return;
    }
    this.kept++;
    this.bytes += size;
    const fields = this.result.fields;
    const row = new Array<unknown>(msg.fields.length);
    for (let i = 0; i < row.length; i++) row[i] = m.render(msg.fields[i]!, fields[i]?.dataTypeID ?? 0);
    this.result.rows.push(row);
  }

  handlePortalSuspended(wire: Wire): void {
    // Only the main statement runs with a row limit. Its last page (the one that reaches maxRows
    // + 1) went out with the rest of the group; a cap reached earlier ends the group here.
    if (this.synced || this.result.truncated) return this.endMain(wire);
    this.corked(wire, () => this.page(wire));
  }

  handleCommandComplete(msg: { text?: string }, wire: Wire): void {
    if (this.stage === this.mainStage) {
      this.result.command = msg.text ?? '';
      return this.endMain(wire);
    }
    this.ran(this.stage++);
  }

  /** The main statement is done: what follows it comes next (sent now if not sent yet). */
  private endMain(wire: Wire): void {
    this.ran(this.stage++);
    if (!this.synced) this.corked(wire, () => this.finish(wire));
  }

  handleEmptyQuery(wire: Wire): void {
    if (this.stage === this.mainStage) return this.endMain(wire);
    this.ran(this.stage++);
  }

  handleCopyInResponse(wire: Wire): void {
    wire.sendCopyFail('COPY is not run through Airlock');
  }

  handleCopyData(): void {}

  handleError(err: BatchError, wire: Wire): void {
    // With a page requested by Flush the server skips to a Sync that was never sent.
    if (!this.synced) {
      wire.sync();
      this.synced = true;
    }
    if (this.settled) return;
    this.settled = true;
    err.airlockBatchPart = this.part();
    this.callback(err);
  }

  handleReadyForQuery(): void {
    if (this.settled) return;
    this.settled = true;
    this.callback(null, this.result);
  }
}
