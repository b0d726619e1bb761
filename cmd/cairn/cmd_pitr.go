package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/internal/source/postgres"
)

// pitrFlags are restore's point-in-time recovery flags.
type pitrFlags struct {
	enabled                bool
	lsn, xid, name, system string
	action, verifyUser     string
	verify                 bool
}

func (f *pitrFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&f.enabled, "pg-pitr", false, "point-in-time recovery: restore the newest base backup before the target (or the SNAPSHOT given) into --target DATADIR and configure recovery with the archived WAL (target: --at TIME, --lsn, --xid, --target-name or 'latest')")
	fl.StringVar(&f.lsn, "lsn", "", "with --pg-pitr: recover up to WAL location `LSN` (like 0/3000060)")
	fl.StringVar(&f.xid, "xid", "", "with --pg-pitr: recover up to transaction `ID`")
	fl.StringVar(&f.name, "target-name", "", "with --pg-pitr: recover up to the restore point `name` (pg_create_restore_point)")
	fl.StringVar(&f.system, "pg-system-id", "", "with --pg-pitr: the database system `ID` to recover, when the repository holds several")
	fl.StringVar(&f.action, "target-action", "promote", "with --pg-pitr: what the server does at the target: promote, pause or shutdown")
	fl.BoolVar(&f.verify, "verify", false, "with --pg-pitr: start a temporary server that replays the WAL, check that recovery reached the target, and report row counts")
	fl.StringVar(&f.verifyUser, "pg-verify-user", "postgres", "with --verify: the database `role` to connect as")
}

// shellQuote quotes a word for sh, which runs restore_command.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '-' || r == '_' || r == '.' || r == ':' || r == '=' || r == '@' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// walFetchCommandLine is the restore_command a recovered server runs:
// this cairn, this repository and the password options given here.
func (a *app) walFetchCommandLine() string {
	exe, err := os.Executable()
	if err != nil {
		exe = "cairn"
	}
	abs := func(p string) string {
		if q, err := filepath.Abs(p); err == nil {
			return q
		}
		return p
	}
	words := []string{shellQuote(exe), "-r", shellQuote(a.repoLocation)}
	if a.passwordFile != "" {
		words = append(words, "--password-file", shellQuote(abs(a.passwordFile)))
	}
	if a.passwordCommand != "" {
		words = append(words, "--password-command", shellQuote(a.passwordCommand))
	}
	if a.cacheDir != "" {
		words = append(words, "--cache-dir", shellQuote(abs(a.cacheDir)))
	}
	return strings.Join(append(words, "wal-fetch", "%f", "%p"), " ")
}

func (a *app) pitrRestore(ctx context.Context, args []string, at, target, bin string, f pitrFlags) error {
	if target == "" {
		return errors.New("--pg-pitr needs --target DATADIR, a new data directory")
	}
	o := postgres.PITROptions{DataDir: target, SystemID: f.system, LSN: f.lsn, XID: f.xid, Name: f.name, Action: f.action,
		Verify: f.verify, Bin: bin, VerifyUser: f.verifyUser, Out: a.out()}
	switch f.action {
	case "promote", "pause", "shutdown":
	default:
		return fmt.Errorf("--target-action %q: promote, pause or shutdown", f.action)
	}
	if f.verify && f.action == "shutdown" {
		return errors.New("--verify needs --target-action promote or pause")
	}
	targets := 0
	for _, s := range []string{at, f.lsn, f.xid, f.name} {
		if s != "" {
			targets++
		}
	}
	base := ""
	if len(args) == 1 && args[0] != "latest" {
		base = args[0] // the base backup to start from; the target comes from the flags
	}
	switch {
	case targets > 1 || (targets == 1 && len(args) == 1 && base == ""):
		return errors.New("give one recovery target: 'latest', --at, --lsn, --xid or --target-name")
	case targets == 0:
		o.Latest = true
	}
	if at != "" {
		t, err := parseAtFlag(at)
		if err != nil {
			return err
		}
		o.At = t
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	o.DataDir = abs
	r, err := a.openRepo(ctx, true)
	if err != nil {
		return err
	}
	defer r.Close()
	o.Repo, o.Downloads = r, a.downloadsFor(r)
	if base != "" {
		if o.Base, err = findSnapshot(ctx, r, base, ""); err != nil {
			return err
		}
	}
	o.RestoreCommand = a.walFetchCommandLine()
	if a.passwordFile == "" && a.passwordCommand == "" {
		a.warnf("restore_command has no password option: the server needs CAIRN_PASSWORD or CAIRN_PASSWORD_FILE in its environment (restore with --password-file to write it in)")
	}
	res, err := postgres.RestorePITR(ctx, o)
	if err != nil {
		return err
	}
	if a.jsonOutput {
		return a.printJSON(struct {
			MessageType string `json:"message_type"`
			*postgres.PITRResult
		}{"pitr_restore", res})
	}
	if !f.verify {
		a.printf("start PostgreSQL on %s to replay the WAL up to %s\n", target, res.Target)
	}
	return nil
}
