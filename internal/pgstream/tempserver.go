package pgstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TempServerOptions configure StartTempServer.
type TempServerOptions struct {
	Tools   Tools  // pg_ctl
	DataDir string // a restored data directory
	// RunAs is the user to run the server as, with runuser (PostgreSQL
	// refuses root); empty runs it as this process's user.
	RunAs string
	// User is the database role to connect as (trust over the socket).
	User string
	// Env is the server's environment (its restore_command's).
	Env []string
	// Wait bounds the start (and a recovery's replay); 0 means 10 minutes.
	Wait time.Duration
	// PauseAtTarget overrides recovery_target_action with pause, so that
	// looking does not end the recovery.
	PauseAtTarget bool
}

// TempServer is a PostgreSQL server started on a restored data directory
// to replay its WAL and look at the result: it listens on a socket in a
// directory of its own only, accepts its socket's connections without a
// password (a temporary hba_file) and archives nothing.
type TempServer struct {
	o       TempServerOptions
	sockDir string
	port    int
	log     string
	ctl     string
}

// StartTempServer starts the server and waits until it accepts
// connections (during recovery, once the data are consistent).
func StartTempServer(ctx context.Context, o TempServerOptions) (*TempServer, error) {
	if o.Wait == 0 {
		o.Wait = 10 * time.Minute
	}
	if o.User == "" {
		o.User = "postgres"
	}
	ctl, err := o.Tools.Path("pg_ctl")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cairn-verify-")
	if err != nil {
		return nil, err
	}
	s := &TempServer{o: o, sockDir: dir, log: filepath.Join(dir, "server.log"), ctl: ctl}
	if err := os.WriteFile(filepath.Join(dir, "pg_hba.conf"), []byte("local all all trust\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The server's user writes its socket and log here; nobody else may
	// (the hba file trusts the socket).
	if o.RunAs != "" {
		uid, gid, err := UserIDs(o.RunAs)
		if err == nil {
			err = ChownTree(dir, uid, gid)
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := strings.Join([]string{
		"-p " + strconv.Itoa(s.port), "-c listen_addresses=''", "-c unix_socket_directories='" + dir + "'",
		"-c archive_mode=off", "-c hba_file='" + filepath.Join(dir, "pg_hba.conf") + "'", "-c logging_collector=off",
		"-c log_min_messages=log", // "recovery stopping ..." is logged at LOG
	}, " ")
	if o.PauseAtTarget {
		opts += " -c recovery_target_action=pause"
	}
	out, err := s.pgctl(ctx, "start", "-w", "-t", strconv.Itoa(int(o.Wait.Seconds())), "-D", o.DataDir, "-l", s.log, "-o", opts)
	if err != nil {
		msg := fmt.Errorf("start PostgreSQL on %s: %v: %s%s", o.DataDir, err, strings.TrimSpace(out), s.LogTail())
		s.Stop()
		return nil, msg
	}
	return s, nil
}

func (s *TempServer) pgctl(ctx context.Context, args ...string) (string, error) {
	var c *exec.Cmd
	if s.o.RunAs != "" {
		c = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.o.RunAs, "--", s.ctl}, args...)...)
	} else {
		c = exec.CommandContext(ctx, s.ctl, args...)
	}
	c.Env = s.o.Env
	c.Dir = s.sockDir
	out, err := c.CombinedOutput()
	return string(out), err
}

// Conn returns the connection to database db.
func (s *TempServer) Conn(db string) *ConnInfo {
	return &ConnInfo{params: map[string]string{"host": s.sockDir, "port": strconv.Itoa(s.port), "user": s.o.User, "dbname": db}}
}

// LogTail is the end of the server's log, for messages.
func (s *TempServer) LogTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) == 0 {
		return ""
	}
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return "\nserver log:\n" + string(b)
}

// Log is the server's whole log.
func (s *TempServer) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// WaitRecovered waits until recovery ended (the server was promoted) or
// paused at its target, and returns the time of the last transaction it
// replayed (zero if none).
func (s *TempServer) WaitRecovered(ctx context.Context) (time.Time, error) {
	deadline := time.Now().Add(s.o.Wait)
	for {
		last, done, err := s.recoveryState(ctx)
		if err == nil && done {
			return last, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("still recovering")
			}
			return time.Time{}, fmt.Errorf("recovery did not end within %v: %v%s", s.o.Wait, err, s.LogTail())
		}
		if strings.Contains(s.Log(), "FATAL:") || strings.Contains(s.Log(), "PANIC:") {
			return time.Time{}, fmt.Errorf("recovery failed%s", s.LogTail())
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *TempServer) recoveryState(ctx context.Context) (time.Time, bool, error) {
	conn, err := s.Conn("postgres").connect(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	var paused string
	var last *time.Time
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END,
		pg_last_xact_replay_timestamp()`).Scan(&inRecovery, &paused, &last)
	if err != nil {
		return time.Time{}, false, err
	}
	var t time.Time
	if last != nil {
		t = *last
	}
	return t, !inRecovery || paused == "paused", nil
}

// CountRows counts the rows of every user table of every database that
// accepts connections.
func (s *TempServer) CountRows(ctx context.Context) (map[string][]TableCount, error) {
	conn, err := s.Conn("postgres").connect(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
	var dbs []string
	if err == nil {
		for rows.Next() {
			var d string
			if err = rows.Scan(&d); err != nil {
				break
			}
			dbs = append(dbs, d)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	conn.Close(context.Background())
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	out := map[string][]TableCount{}
	for _, db := range dbs {
		c, err := s.Conn(db).connect(ctx)
		if err != nil {
			return nil, err
		}
		tables, err := listTables(ctx, c)
		if err == nil {
			tables, err = countRows(ctx, c, tables)
		}
		c.Close(context.Background())
		if err != nil {
			return nil, fmt.Errorf("count rows in %s: %w", db, err)
		}
		out[db] = tables
	}
	return out, nil
}

// Stop shuts the server down (fast) and removes its socket directory.
func (s *TempServer) Stop() {
	_, _ = s.pgctl(context.Background(), "stop", "-m", "fast", "-w", "-D", s.o.DataDir)
	os.RemoveAll(s.sockDir)
}
