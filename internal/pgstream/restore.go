package pgstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cairn-backup/cairn/internal/tailbuf"
)

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Target names the server and database to restore into; when it names
	// no database, the dumped database's name is used.
	Target *ConnInfo
	Tools  Tools
	// Dump is the stored dump; Details what the backup recorded with it.
	Dump    io.Reader
	Details *Details
	// Globals, when set, is pg_dumpall --globals-only output to apply first.
	Globals io.Reader
	// Create creates the database when it does not exist (connecting to the
	// "postgres" maintenance database). Clean restores over existing
	// objects (pg_restore --clean --if-exists); without it a database with
	// any user table is refused. NoOwner skips ownership and privileges.
	Create, Clean, NoOwner bool
	// Jobs > 1 runs pg_restore in parallel from a temporary copy of the
	// dump in TempDir (os.TempDir() when empty), removed afterwards.
	Jobs    int
	TempDir string
	// Log receives progress lines (may be nil).
	Log io.Writer
}

// RestoreResult is what a restore did and how its verification went.
type RestoreResult struct {
	Database string
	Created  bool
	// ExistingRoles and ExistingTablespaces were in the globals but already
	// on the server: left unchanged.
	ExistingRoles       []string
	ExistingTablespaces []string
	Bytes               int64
	RestoreTime         time.Duration
	// Checks compare every table's row count with the backup's; Extra are
	// tables in the target that were not in the backup.
	Checks []TableCheck
	Extra  []string
}

// TableCheck is one row of the verification.
type TableCheck struct {
	Table    string `json:"table"`
	AtBackup int64  `json:"at_backup"`
	Restored int64  `json:"restored"` // -1: the table is missing
	OK       bool   `json:"ok"`
}

// ErrVerify is returned (wrapped) when row counts differ from the backup.
var ErrVerify = errors.New("restored row counts differ from the backup")

// Restore creates the database if asked, refuses a non-empty one unless
// Clean, applies the globals if given, restores the dump with pg_restore (custom) or psql (plain), stopping at
// the first error, runs ANALYZE and compares every table's row count with
// the counts recorded at backup.
func Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	det := o.Details
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	db := o.Target.Database()
	if db == "" {
		db = det.Database
	}
	target := o.Target.WithDatabase(db)
	res := &RestoreResult{Database: db}

	tool := "pg_restore"
	if det.Format == FormatPlain {
		tool = "psql"
		if o.Clean {
			return nil, errors.New("--pg-clean needs a custom-format dump: a plain SQL dump has no DROP statements; restore into an empty database (--pg-create with a new name)")
		}
		if o.Jobs > 1 {
			logf("note: --jobs is ignored for a plain SQL dump (psql runs it in order)")
		}
		if o.NoOwner {
			logf("note: --pg-no-owner is ignored for a plain SQL dump (its ownership statements are part of the SQL)")
		}
	}
	var need Version
	if det.PgDumpVersion != "" {
		need, _ = parseToolVersion("(PostgreSQL) " + det.PgDumpVersion)
	}
	toolPath, _, err := checkToolVersion(ctx, o.Tools, tool, need, "the pg_dump "+det.PgDumpVersion+" that wrote the dump")
	if err != nil {
		return nil, err
	}

	if o.Create {
		created, err := createDatabase(ctx, target, db, det.Encoding)
		if err != nil {
			return nil, err
		}
		res.Created = created
		if created {
			logf("created database %s", displayIdent(db))
		} else {
			logf("database %s exists", displayIdent(db))
		}
	}
	conn, err := target.connect(ctx)
	if err != nil {
		if !o.Create && strings.Contains(err.Error(), "does not exist") {
			err = fmt.Errorf("%w (give --pg-create to create it)", err)
		}
		return nil, err
	}
	defer conn.Close(context.Background())
	existing, err := listTables(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("list tables of %s: %s", target, target.Redact(err.Error()))
	}
	if len(existing) > 0 && !o.Clean {
		return nil, notEmptyError(db, existing)
	}
	// Roles come before the objects they own; after the checks above, so
	// that a refused restore changes nothing on the server.
	if o.Globals != nil {
		roles, spaces, err := applyGlobals(ctx, o, target)
		if err != nil {
			return nil, err
		}
		res.ExistingRoles, res.ExistingTablespaces = roles, spaces
	}

	start := time.Now()
	cr := &countingReader{r: o.Dump}
	var args []string
	var stdin io.Reader = cr
	if tool == "psql" {
		args = []string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", dbnameArg(db), "-f", "-"}
	} else {
		args = []string{"--exit-on-error", "--no-password", "-d", dbnameArg(db)}
		if o.Clean {
			args = append(args, "--clean", "--if-exists")
		}
		if o.NoOwner {
			args = append(args, "--no-owner", "--no-acl")
		}
		if o.Jobs > 1 {
			spool, err := spoolDump(o.TempDir, cr)
			if err != nil {
				return nil, err
			}
			defer os.Remove(spool)
			args = append(args, "--jobs="+strconv.Itoa(o.Jobs), spool)
			stdin = nil
		}
	}
	logf("restoring %s dump of %s (PostgreSQL %s, taken %s) into %s with %s", det.Format, displayIdent(det.Database),
		det.ServerRelease(), det.Time.Local().Format("2006-01-02 15:04:05"), displayIdent(db), tool)
	if err := runTool(ctx, target, toolPath, args, stdin, io.Discard); err != nil {
		return nil, fmt.Errorf("restore into %s failed, the database is partly restored (fix the cause, then restore again with --pg-clean or into a new database): %w", displayIdent(db), err)
	}
	res.Bytes, res.RestoreTime = cr.n, time.Since(start)
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return nil, fmt.Errorf("ANALYZE %s: %s", displayIdent(db), target.Redact(err.Error()))
	}
	if err := res.verify(ctx, conn, det); err != nil {
		return res, err
	}
	return res, nil
}

// verify counts the rows of every table recorded at backup.
func (res *RestoreResult) verify(ctx context.Context, conn *pgx.Conn, det *Details) error {
	tables, err := listTables(ctx, conn)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	have := map[string]TableCount{}
	for _, t := range tables {
		have[t.QualifiedName()] = t
	}
	inBackup := map[string]bool{}
	bad := 0
	for _, t := range det.Tables {
		name := t.QualifiedName()
		inBackup[name] = true
		c := TableCheck{Table: name, AtBackup: t.Rows, Restored: -1}
		if _, ok := have[name]; ok {
			got, err := countRows(ctx, conn, []TableCount{t})
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			c.Restored = got[0].Rows
		}
		c.OK = c.Restored == c.AtBackup
		if !c.OK {
			bad++
		}
		res.Checks = append(res.Checks, c)
	}
	for _, t := range tables {
		if !inBackup[t.QualifiedName()] {
			res.Extra = append(res.Extra, t.QualifiedName())
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d tables", ErrVerify, bad, len(det.Tables))
	}
	return nil
}

// WriteChecks prints the verification as a table.
func WriteChecks(w io.Writer, checks []TableCheck) {
	width := len("table")
	for _, c := range checks {
		width = max(width, len(c.Table))
	}
	fmt.Fprintf(w, "%-*s  %12s  %12s  %s\n", width, "table", "at backup", "restored", "")
	for _, c := range checks {
		restored, mark := strconv.FormatInt(c.Restored, 10), "ok"
		if c.Restored < 0 {
			restored = "missing"
		}
		if !c.OK {
			mark = "DIFF"
		}
		fmt.Fprintf(w, "%-*s  %12d  %12s  %s\n", width, c.Table, c.AtBackup, restored, mark)
	}
}

// notEmptyError refuses a restore into a database that has tables.
func notEmptyError(db string, existing []TableCount) error {
	var names []string
	for _, t := range existing[:min(3, len(existing))] {
		names = append(names, t.QualifiedName())
	}
	return fmt.Errorf("database %s is not empty (%d tables, e.g. %s): give --pg-clean to drop and recreate the dumped objects, or restore into a new database with --pg-create",
		displayIdent(db), len(existing), strings.Join(names, ", "))
}

// Preflight checks, without changing anything, what Restore would find:
// the client tool, the target database (present, empty, or to be
// created) and whether the options allow restoring into it. It returns
// what the restore will do, in a few words, or why it would fail.
func Preflight(ctx context.Context, o RestoreOptions) (string, error) {
	det := o.Details
	db := o.Target.Database()
	if db == "" {
		db = det.Database
	}
	target := o.Target.WithDatabase(db)
	tool := "pg_restore"
	if det.Format == FormatPlain {
		tool = "psql"
		if o.Clean {
			return "", errors.New("--pg-clean needs a custom-format dump: a plain SQL dump has no DROP statements")
		}
	}
	var need Version
	if det.PgDumpVersion != "" {
		need, _ = parseToolVersion("(PostgreSQL) " + det.PgDumpVersion)
	}
	if _, _, err := checkToolVersion(ctx, o.Tools, tool, need, "the pg_dump "+det.PgDumpVersion+" that wrote the dump"); err != nil {
		return "", err
	}
	conn, err := target.connect(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			if o.Create {
				return fmt.Sprintf("database %s will be created", displayIdent(db)), nil
			}
			return "", fmt.Errorf("%w (give --pg-create to create it)", err)
		}
		return "", err
	}
	defer conn.Close(context.Background())
	existing, err := listTables(ctx, conn)
	if err != nil {
		return "", fmt.Errorf("list tables of %s: %s", target, target.Redact(err.Error()))
	}
	switch {
	case len(existing) == 0:
		return fmt.Sprintf("into the existing, empty database %s", displayIdent(db)), nil
	case o.Clean:
		return fmt.Sprintf("database %s has %d tables: the dumped objects are dropped and recreated", displayIdent(db), len(existing)), nil
	}
	return "", notEmptyError(db, existing)
}

func createDatabase(ctx context.Context, target *ConnInfo, db, encoding string) (bool, error) {
	maint := target.WithDatabase("postgres")
	conn, err := maint.connect(ctx)
	if err != nil {
		return false, fmt.Errorf("--pg-create connects to the maintenance database: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return false, fmt.Errorf("--pg-create: %s", maint.Redact(err.Error()))
	}
	if exists {
		return false, nil
	}
	// template0: objects an administrator added to template1 would collide
	// with the dump's; the dumped database's encoding when the server's
	// locale allows it.
	stmt := "CREATE DATABASE " + quoteIdent(db) + " TEMPLATE template0"
	if encoding != "" {
		if _, err := conn.Exec(ctx, stmt+" ENCODING "+quoteLiteral(encoding)); err == nil {
			return true, nil
		}
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return false, fmt.Errorf("create database %s: %s", quoteIdent(db), maint.Redact(err.Error()))
	}
	return true, nil
}

// applyGlobals runs the globals through psql in the maintenance database,
// leaving out the statements about roles and tablespaces that exist.
func applyGlobals(ctx context.Context, o RestoreOptions, target *ConnInfo) (roles, spaces []string, err error) {
	sql, err := io.ReadAll(o.Globals)
	if err != nil {
		return nil, nil, fmt.Errorf("read globals: %w", err)
	}
	maint := target.WithDatabase("postgres")
	conn, err := maint.connect(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("globals: %w", err)
	}
	names := func(q string) (map[string]bool, error) {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		out := map[string]bool{}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, err
			}
			out[n] = true
		}
		return out, rows.Err()
	}
	haveRoles, err1 := names("SELECT rolname FROM pg_roles")
	haveSpaces, err2 := names("SELECT spcname FROM pg_tablespace")
	conn.Close(context.Background())
	if err := errors.Join(err1, err2); err != nil {
		return nil, nil, fmt.Errorf("globals: %s", target.Redact(err.Error()))
	}
	rewritten, roles, spaces := rewriteGlobals(string(sql), haveRoles, haveSpaces)
	psql, _, err := checkToolVersion(ctx, o.Tools, "psql", Version{}, "")
	if err != nil {
		return nil, nil, err
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "applying globals (roles, tablespaces)\n")
		if len(roles) > 0 {
			fmt.Fprintf(o.Log, "roles that already exist, left unchanged: %s\n", strings.Join(roles, ", "))
		}
		if len(spaces) > 0 {
			fmt.Fprintf(o.Log, "tablespaces that already exist, left unchanged: %s\n", strings.Join(spaces, ", "))
		}
	}
	args := []string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", dbnameArg("postgres"), "-f", "-"}
	if err := runTool(ctx, maint, psql, args, strings.NewReader(rewritten), io.Discard); err != nil {
		return nil, nil, fmt.Errorf("apply globals: %w", err)
	}
	return roles, spaces, nil
}

const identPattern = `("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`

var (
	roleStmtRE  = regexp.MustCompile(`^(?:CREATE ROLE|ALTER ROLE|COMMENT ON ROLE|SECURITY LABEL FOR \S+ ON ROLE) ` + identPattern + `[\s;]`)
	spaceStmtRE = regexp.MustCompile(`^(?:CREATE TABLESPACE|ALTER TABLESPACE|COMMENT ON TABLESPACE|SECURITY LABEL FOR \S+ ON TABLESPACE) ` + identPattern + `[\s;]`)
)

// rewriteGlobals drops, from pg_dumpall --globals-only output, the
// statements that create or alter roles and tablespaces that already
// exist (listed in roles and spaces), so that applying the rest never
// fails on them and never changes them (such as the password of the
// role restoring). It returns the new script and the names left out.
func rewriteGlobals(sql string, roles, spaces map[string]bool) (string, []string, []string) {
	var out strings.Builder
	skippedRoles, skippedSpaces := map[string]bool{}, map[string]bool{}
	for _, u := range splitStatements(sql) {
		if u.stmt {
			if m := roleStmtRE.FindStringSubmatch(u.text); m != nil && roles[identName(m[1])] {
				skippedRoles[identName(m[1])] = true
				out.WriteString("-- cairn: role " + m[1] + " exists, left unchanged\n")
				continue
			}
			if m := spaceStmtRE.FindStringSubmatch(u.text); m != nil && spaces[identName(m[1])] {
				skippedSpaces[identName(m[1])] = true
				out.WriteString("-- cairn: tablespace " + m[1] + " exists, left unchanged\n")
				continue
			}
		}
		out.WriteString(u.text)
	}
	return out.String(), sortedKeys(skippedRoles), sortedKeys(skippedSpaces)
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// identName is the name an SQL identifier denotes.
func identName(id string) string {
	if strings.HasPrefix(id, `"`) {
		return strings.ReplaceAll(id[1:len(id)-1], `""`, `"`)
	}
	return strings.ToLower(id)
}

type sqlUnit struct {
	text string
	stmt bool
}

// splitStatements cuts a script into statements (up to a ';' outside
// quotes) and the lines between them (comments, blank lines, psql
// meta-commands), which are kept as they are.
func splitStatements(s string) []sqlUnit {
	var units []sqlUnit
	for len(s) > 0 {
		// Between statements: whole lines of blanks, comments, meta-commands.
		line := s
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line = s[:i+1]
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") || strings.HasPrefix(trimmed, `\`) {
			units = append(units, sqlUnit{text: line})
			s = s[len(line):]
			continue
		}
		end := statementEnd(s)
		units = append(units, sqlUnit{text: s[:end], stmt: true})
		s = s[end:]
	}
	return units
}

// statementEnd returns the length of the statement at the start of s,
// through its ';' and the end of that line.
func statementEnd(s string) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0 // a doubled quote reopens at once
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == ';':
			if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
				return i + j + 1
			}
			return len(s)
		}
	}
	return len(s)
}

// runTool runs a client program to its end, feeding stdin; its error
// carries the program's last stderr lines (without the password).
func runTool(ctx context.Context, conn *ConnInfo, path string, args []string, stdin io.Reader, stdout io.Writer) error {
	name := path[strings.LastIndexByte(path, '/')+1:]
	c := exec.CommandContext(ctx, path, args...)
	c.Env = conn.Env()
	c.Stdin, c.Stdout = stdin, stdout
	stderr := tailbuf.New(64 << 10)
	c.Stderr = stderr
	if err := c.Run(); err != nil {
		r := &run{name: name, stderr: stderr, conn: conn}
		return errors.New(conn.Redact(fmt.Sprintf("%s failed (%v)%s", name, err, r.stderrSuffix())))
	}
	return nil
}

// spoolDump copies the dump to a temporary file (parallel pg_restore needs
// a seekable input) and returns its name.
func spoolDump(dir string, r io.Reader) (string, error) {
	f, err := os.CreateTemp(dir, "cairn-pg-restore-*.pgdump")
	if err != nil {
		return "", fmt.Errorf("temporary copy of the dump for --jobs: %w", err)
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("temporary copy of the dump for --jobs in %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// quoteIdent quotes a name for SQL; in messages, displayIdent reads better.
func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
