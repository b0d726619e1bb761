package pgstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Dump formats.
const (
	FormatCustom = "custom" // pg_dump -Fc -Z0: pg_restore, parallel restore
	FormatPlain  = "plain"  // SQL text: psql
)

// Details is what a backup records about a dumped database, stored with
// the snapshot (passwords never appear in it).
type Details struct {
	Database         string `json:"database"`
	Format           string `json:"format"`
	Connection       string `json:"connection"` // without password
	ServerVersion    string `json:"server_version"`
	ServerVersionNum int    `json:"server_version_num"`
	PgDumpVersion    string `json:"pg_dump_version"`
	PgDumpPath       string `json:"pg_dump_path,omitempty"`
	Standby          bool   `json:"standby,omitempty"`
	// Time is now() in the dump's transaction, WALLSN the WAL position at
	// that snapshot (pg_current_wal_lsn, or pg_last_wal_replay_lsn on a standby).
	Time     time.Time `json:"time"`
	WALLSN   string    `json:"wal_lsn"`
	Encoding string    `json:"encoding,omitempty"`
	Collate  string    `json:"collate,omitempty"`
	Ctype    string    `json:"ctype,omitempty"`
	// Tables holds the exact row count of every user table, counted in the
	// snapshot pg_dump used.
	Tables []TableCount `json:"tables"`
}

// TableCount is the row count of one table.
type TableCount struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Rows   int64  `json:"rows"`
}

// QualifiedName is schema.name for people: a part is quoted unless it is
// a plain lower-case name.
func (t TableCount) QualifiedName() string {
	return displayIdent(t.Schema) + "." + displayIdent(t.Name)
}

// sqlName is schema.name quoted for SQL.
func (t TableCount) sqlName() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

var plainIdentRE = regexp.MustCompile(`^[a-z_][a-z0-9_$]*$`)

func displayIdent(s string) string {
	if plainIdentRE.MatchString(s) {
		return s
	}
	return pgx.Identifier{s}.Sanitize()
}

// ServerRelease is the server's version without its build details ("15.18").
func (d *Details) ServerRelease() string { return shortVersion(d.ServerVersion) }

func shortVersion(v string) string { return strings.Fields(v + " ")[0] }

// Rows is the sum of all row counts.
func (d *Details) Rows() int64 {
	var n int64
	for _, t := range d.Tables {
		n += t.Rows
	}
	return n
}

// FileName is the name of the dump in a snapshot's /postgres directory:
// <database>.pgdump for custom dumps, <database>.sql for plain ones.
func FileName(database, format string) string {
	name := database
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		name = url.PathEscape(name)
		if name == "" || name == "." || name == ".." {
			name = "%2E" + name
		}
	}
	if format == FormatPlain {
		return name + ".sql"
	}
	return name + ".pgdump"
}

// GlobalsFileName is the name of pg_dumpall --globals-only's output.
const GlobalsFileName = "globals.sql"

// DumpOptions configure StartDump.
type DumpOptions struct {
	Conn  *ConnInfo
	Tools Tools
	// Format is FormatCustom (default) or FormatPlain.
	Format string
	// LockWaitTimeout bounds the wait for table locks, both cairn's own and
	// pg_dump's (--lock-wait-timeout): a migration holding a lock fails the
	// backup instead of stalling it. 0 waits forever.
	LockWaitTimeout time.Duration
}

// Dump is a running pg_dump whose output is Reader. Call Finish once the
// reader was consumed (or abandoned): only then is the dump known good.
type Dump struct {
	Database string
	Reader   io.Reader

	format   string
	conn     *pgx.Conn
	tx       pgx.Tx
	dump     *run
	details  Details
	cancel   context.CancelFunc
	countErr error
	counted  chan struct{}
	finished bool
	err      error
	warnings []string
}

// StartDump connects, takes a consistent snapshot, starts pg_dump in it and
// counts every table's rows in the same snapshot while pg_dump runs.
func StartDump(ctx context.Context, o DumpOptions) (d *Dump, err error) {
	format := o.Format
	switch format {
	case "":
		format = FormatCustom
	case FormatCustom, FormatPlain:
	default:
		return nil, fmt.Errorf("unknown dump format %q: use %q or %q", o.Format, FormatCustom, FormatPlain)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	conn, err := o.Conn.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			conn.Close(context.Background())
		}
	}()
	fail := func(what string, err error) error {
		return fmt.Errorf("%s on %s: %s", what, o.Conn, o.Conn.Redact(err.Error()))
	}
	d = &Dump{format: format, conn: conn, cancel: cancel, counted: make(chan struct{})}
	det := &d.details
	det.Format = format
	det.Connection = o.Conn.String()
	err = conn.QueryRow(ctx, `SELECT current_database(), current_setting('server_version'), current_setting('server_version_num')::int,
		pg_is_in_recovery(), pg_encoding_to_char(encoding), datcollate, datctype
		FROM pg_database WHERE datname = current_database()`).Scan(
		&det.Database, &det.ServerVersion, &det.ServerVersionNum, &det.Standby, &det.Encoding, &det.Collate, &det.Ctype)
	if err != nil {
		return nil, fail("read server facts", err)
	}
	d.Database = det.Database
	server := Version{Text: det.ServerRelease(), Num: det.ServerVersionNum}
	dumpPath, dumpVersion, err := checkToolVersion(ctx, o.Tools, "pg_dump", server, serverWhat(server, o.Conn))
	if err != nil {
		return nil, err
	}
	det.PgDumpVersion, det.PgDumpPath = dumpVersion.Text, dumpPath

	// The tables are locked before the snapshot is taken, so none can be
	// rewritten (ALTER TABLE, TRUNCATE) between the snapshot and pg_dump's
	// own locks, which would make both see it empty.
	tables, err := listTables(ctx, conn)
	if err != nil {
		return nil, fail("list tables", err)
	}
	d.tx, err = conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fail("begin transaction", err)
	}
	if o.LockWaitTimeout > 0 {
		if _, err := d.tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", o.LockWaitTimeout.Milliseconds())); err != nil {
			return nil, fail("set lock_timeout", err)
		}
	}
	if err := lockTables(ctx, d.tx, tables); err != nil {
		return nil, fail("lock tables (waited up to --pg-lock-wait-timeout)", err)
	}
	var snapshot string
	var lsn *string
	lsnQuery := "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text"
	if det.ServerVersionNum < 100000 {
		lsnQuery = "CASE WHEN pg_is_in_recovery() THEN pg_last_xlog_replay_location() ELSE pg_current_xlog_location() END::text"
	}
	if err := d.tx.QueryRow(ctx, "SELECT pg_export_snapshot(), now(), "+lsnQuery).Scan(&snapshot, &det.Time, &lsn); err != nil {
		return nil, fail("export snapshot", err)
	}
	if lsn != nil {
		det.WALLSN = *lsn
	}
	// Tables created between the listing and the snapshot are counted too.
	tables, err = listTables(ctx, d.tx)
	if err != nil {
		return nil, fail("list tables", err)
	}

	args := []string{"--no-password", "--snapshot=" + snapshot}
	if format == FormatCustom {
		args = append(args, "--format=custom", "--compress=0")
	} else {
		args = append(args, "--format=plain")
	}
	if o.LockWaitTimeout > 0 {
		args = append(args, "--lock-wait-timeout="+strconv.FormatInt(o.LockWaitTimeout.Milliseconds(), 10))
	}
	// The database comes from the environment too: the one cairn is
	// connected to, even when the connection string names none.
	d.dump, err = startRun(ctx, o.Conn, dumpPath, args, "PGDATABASE="+det.Database)
	if err != nil {
		return nil, err
	}
	d.Reader = d.dump.out
	go func() {
		defer close(d.counted)
		det.Tables, d.countErr = countRows(ctx, d.tx, tables)
		if d.countErr != nil {
			d.countErr = fail("count rows", d.countErr)
		}
	}()
	return d, nil
}

// Finish waits for pg_dump and returns the details to record. It fails if
// pg_dump did not exit 0, its output was not read to the end, or the output
// is not a complete dump; the backup must then not be committed.
func (d *Dump) Finish() (*Details, error) {
	if d.finished {
		return &d.details, d.err
	}
	d.finished = true
	dumpErr := d.dump.wait()
	if dumpErr != nil {
		d.cancel() // stop counting
	}
	<-d.counted
	d.err = dumpErr
	if d.err == nil {
		d.err = d.countErr
	}
	if d.err == nil {
		d.err = d.checkComplete()
	}
	if d.err != nil {
		d.err = fmt.Errorf("database %s: %w", d.Database, d.err)
	}
	_ = d.tx.Rollback(context.Background()) // read only: nothing to commit
	d.conn.Close(context.Background())
	d.cancel()
	if s := d.dump.stderr.String(); s != "" && d.err == nil {
		for _, l := range strings.Split(s, "\n") {
			d.warnings = append(d.warnings, d.dump.conn.Redact(l))
		}
	}
	return &d.details, d.err
}

// Warnings are the lines pg_dump wrote to stderr in a successful run.
func (d *Dump) Warnings() []string { return d.warnings }

// checkComplete checks the shape of the output: a custom dump starts with
// pg_dump's magic, a plain one ends with its completion comment.
func (d *Dump) checkComplete() error {
	n, head, tail, _, _ := d.dump.out.state()
	switch {
	case n == 0:
		return errors.New("pg_dump exited 0 but wrote nothing")
	case d.format == FormatCustom && !bytes.HasPrefix(head, []byte("PGDMP")):
		return errors.New("pg_dump output is not a custom-format archive (no PGDMP header)")
	case d.format == FormatPlain && !bytes.Contains(tail, []byte("-- PostgreSQL database dump complete")):
		return errors.New("pg_dump output ends without its \"dump complete\" line: the dump is truncated")
	}
	return nil
}

// userTablesSQL lists ordinary tables (and partitions) outside the system
// schemas; partitioned parents are left out since their rows are their
// partitions' rows, counted there.
const userTablesSQL = `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r' AND c.relpersistence <> 't'
	AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
	ORDER BY 1, 2`

func listTables(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) ([]TableCount, error) {
	rows, err := q.Query(ctx, userTablesSQL)
	if err != nil {
		return nil, err
	}
	var out []TableCount
	for rows.Next() {
		var t TableCount
		if err := rows.Scan(&t.Schema, &t.Name); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func lockTables(ctx context.Context, tx pgx.Tx, tables []TableCount) error {
	for i := 0; i < len(tables); i += 500 {
		batch := tables[i:min(i+500, len(tables))]
		names := make([]string, len(batch))
		for j, t := range batch {
			names[j] = t.sqlName()
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+" IN ACCESS SHARE MODE"); err != nil {
			return err
		}
	}
	return nil
}

// countRows counts each table's rows exactly (FROM ONLY: an inheritance
// parent's own rows).
func countRows(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, tables []TableCount) ([]TableCount, error) {
	out := make([]TableCount, len(tables))
	for i, t := range tables {
		out[i] = t
		if err := q.QueryRow(ctx, "SELECT count(*) FROM ONLY "+t.sqlName()).Scan(&out[i].Rows); err != nil {
			return nil, fmt.Errorf("%s: %w", t.QualifiedName(), err)
		}
	}
	return out, nil
}

// Globals is a running pg_dumpall --globals-only (roles, their passwords,
// memberships and settings; tablespaces). Call Finish after reading Reader.
type Globals struct {
	Reader io.Reader
	run    *run
}

// StartGlobals starts pg_dumpall --globals-only against the server of o.Conn.
// It needs a superuser (pg_dumpall reads pg_authid): that is checked first.
func StartGlobals(ctx context.Context, o DumpOptions) (*Globals, error) {
	conn, err := o.Conn.connect(ctx)
	if err != nil {
		return nil, err
	}
	var super bool
	var user, version, db string
	var versionNum int
	err = conn.QueryRow(ctx, `SELECT rolsuper, current_user, current_setting('server_version'), current_setting('server_version_num')::int, current_database()
		FROM pg_roles WHERE rolname = current_user`).Scan(&super, &user, &version, &versionNum, &db)
	conn.Close(context.Background())
	if err != nil {
		return nil, fmt.Errorf("globals of %s: %s", o.Conn, o.Conn.Redact(err.Error()))
	}
	if !super {
		return nil, fmt.Errorf("globals of %s: pg_dumpall --globals-only needs a superuser and %q is not one: give --pg-no-globals to back up the database without roles and tablespaces", o.Conn, user)
	}
	server := Version{Text: shortVersion(version), Num: versionNum}
	path, _, err := checkToolVersion(ctx, o.Tools, "pg_dumpall", server, serverWhat(server, o.Conn))
	if err != nil {
		return nil, err
	}
	r, err := startRun(ctx, o.Conn, path, []string{"--globals-only", "--no-password", "-l", db})
	if err != nil {
		return nil, err
	}
	return &Globals{Reader: r.out, run: r}, nil
}

// Finish waits for pg_dumpall; an error means the globals are unusable.
func (g *Globals) Finish() error {
	if err := g.run.wait(); err != nil {
		return fmt.Errorf("globals: %w", err)
	}
	if _, _, tail, _, _ := g.run.out.state(); !bytes.Contains(tail, []byte("-- PostgreSQL database cluster dump complete")) {
		return errors.New("globals: pg_dumpall output ends without its \"dump complete\" line: it is truncated")
	}
	return nil
}

func serverWhat(v Version, c *ConnInfo) string {
	return fmt.Sprintf("the server, PostgreSQL %s (server_version_num %d) at %s", v.Text, v.Num, c)
}
