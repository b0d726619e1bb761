// Command cairn is a deduplicating, encrypted snapshot tool for files,
// streams and whole application deployments.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/seen"
	"github.com/cairn-backup/cairn/repo"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit codes, as restic's.
const (
	exitOK          = 0
	exitError       = 1
	exitPartial     = 3
	exitNoRepo      = 10
	exitWrongPass   = 12
	exitInterrupted = 130
)

// exitCodeError carries a specific exit code with its message.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// errPartial marks a run that wrote its snapshot but could not read all input.
var errPartial = errors.New("snapshot written, but some input could not be read")

func exitCode(ctx context.Context, err error) int {
	var ec *exitCodeError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		return ec.code
	case ctx.Err() != nil:
		// Only a signal ends ctx. A context.Canceled inside err without
		// one is a timeout or a dead server: it keeps its message.
		return exitInterrupted
	case errors.Is(err, repo.ErrNoRepository):
		return exitNoRepo
	case errors.Is(err, repo.ErrWrongPassword):
		return exitWrongPass
	case errors.Is(err, errPartial):
		return exitPartial
	}
	return exitError
}

// app holds what every command shares: global flags and output streams.
type app struct {
	// dieBySignal makes an interrupted run end by SIGTERM rather than exit
	// 130 (wal-push, wal-fetch: PostgreSQL's commands).
	dieBySignal     bool
	repoLocation    string
	passwordFile    string
	passwordCommand string
	jsonOutput      bool
	cpuProfile      string
	maxEntries      int
	// seen remembers the newest snapshots this machine listed (nil with
	// --no-cache); seenMu guards it.
	seen           *seen.Memory
	seenMu         sync.Mutex
	memProfile     string
	s3Region       string
	s3CAFile       string
	s3StallTimeout time.Duration
	s3RetryTime    time.Duration
	uploads        int
	downloads      int
	cacheDir       string
	noCache        bool
	// tempCache makes a remote repository's cache last one command (check
	// reads what the repository holds, not what this machine kept).
	tempCache bool
	// memoryBase is the soft memory limit the command chose (open.go).
	memoryBase     int64
	quiet          bool
	stdin          io.Reader
	stdout, stderr io.Writer
	// jsonMu keeps JSON lines written from several goroutines whole.
	jsonMu sync.Mutex
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	err := a.rootCommand().ExecuteContext(ctx)
	code := exitCode(ctx, err)
	stop()
	if code == exitInterrupted && a.dieBySignal {
		// PostgreSQL takes an archive or restore command killed by
		// SIGTERM for part of its shutdown, but an exit status above 125
		// for a failure that stops recovery: die by the signal.
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(time.Second)
	}
	if err != nil {
		msg := err.Error()
		if code == exitInterrupted {
			msg = "interrupted"
		}
		if a.jsonOutput {
			// With --json, stderr carries JSON lines too (restic's
			// exit_error), the last one saying why the command failed.
			_ = a.printJSONTo(os.Stderr, exitErrorJSON{MessageType: "exit_error", Code: code, Message: msg})
			os.Exit(code)
		}
		if !errors.Is(err, errPartial) {
			fmt.Fprintf(os.Stderr, "cairn: %s\n", msg)
		} else {
			fmt.Fprintf(os.Stderr, "cairn: warning: %s\n", msg)
		}
	}
	os.Exit(code)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "cairn",
		Short:         "Deduplicating, encrypted snapshots of files, streams and deployments",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&a.repoLocation, "repo", "r", os.Getenv("CAIRN_REPOSITORY"), "repository location (`/path`, local:/path, s3:https://host/bucket/prefix); env CAIRN_REPOSITORY")
	pf.StringVar(&a.passwordFile, "password-file", os.Getenv("CAIRN_PASSWORD_FILE"), "read the password from `file`; env CAIRN_PASSWORD_FILE")
	pf.StringVar(&a.passwordCommand, "password-command", os.Getenv("CAIRN_PASSWORD_COMMAND"), "run `command` and use its output as the password; env CAIRN_PASSWORD_COMMAND")
	pf.BoolVar(&a.jsonOutput, "json", false, "print machine-readable JSON")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "print only errors")
	pf.StringVar(&a.s3Region, "s3-region", "", "S3 `region` (default: AWS_DEFAULT_REGION, or asked from the server)")
	pf.StringVar(&a.s3CAFile, "s3-ca-file", os.Getenv("CAIRN_S3_CA_FILE"), "trust the certificate authorities in PEM `file` for S3 over TLS; env CAIRN_S3_CA_FILE")
	pf.DurationVar(&a.s3StallTimeout, "s3-stall-timeout", envDuration("CAIRN_S3_STALL_TIMEOUT"), "give up an S3 request attempt (and retry it) when no byte moved for `duration` (default 1m); env CAIRN_S3_STALL_TIMEOUT")
	pf.DurationVar(&a.s3RetryTime, "s3-retry-time", envDuration("CAIRN_S3_RETRY_TIME"), "retry a failing S3 request for at most `duration` (default 2m); env CAIRN_S3_RETRY_TIME")
	pf.IntVar(&a.uploads, "uploads", 0, "concurrent pack uploads (default 2 for local repositories, 6 for S3)")
	pf.IntVar(&a.downloads, "downloads", 0, "concurrent pack reads of restore and dump (default 4 for local repositories, 8 for S3)")
	pf.IntVar(&a.maxEntries, "max-entries", envInt("CAIRN_MAX_ENTRIES"), "fail a listing or restore of a snapshot with more than `n` entries (default 20000000; a restore plans about 300 bytes each); env CAIRN_MAX_ENTRIES")
	pf.StringVar(&a.cacheDir, "cache-dir", os.Getenv("CAIRN_CACHE_DIR"), "keep the local metadata cache of remote repositories in `dir` (default $XDG_CACHE_HOME/cairn or ~/.cache/cairn); env CAIRN_CACHE_DIR")
	pf.BoolVar(&a.noCache, "no-cache", false, "do not keep a local metadata cache (a temporary one serves this command)")
	pf.StringVar(&a.cpuProfile, "cpu-profile", "", "write a CPU profile to `file` (for development)")
	_ = pf.MarkHidden("cpu-profile")
	pf.StringVar(&a.memProfile, "mem-profile", "", "write the heap profile at the peak of heap use to `file` (for development)")
	_ = pf.MarkHidden("mem-profile")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		// Every command takes the repository and password from a profile
		// (backup, restore, snapshots and forget also use its sources).
		if fl := cmd.Flags().Lookup("config"); fl != nil && fl.Value.String() != "" {
			if _, err := a.loadProfile(fl.Value.String()); err != nil {
				return err
			}
		}
		if a.memProfile != "" {
			go peakHeapProfile(cmd.Context(), a.memProfile)
		}
		if a.cpuProfile == "" {
			return nil
		}
		f, err := os.Create(a.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		return pprof.StartCPUProfile(f)
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if a.cpuProfile != "" {
			pprof.StopCPUProfile()
		}
	}
	root.AddCommand(a.commands()...)
	addConfigFlags(root)
	return root
}

// addConfigFlags gives every command that has no --config of its own one
// that takes the repository and password from a deployment profile.
func addConfigFlags(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		addConfigFlags(c)
	}
	if cmd.Runnable() && cmd.Flags().Lookup("config") == nil {
		cmd.Flags().String("config", "", "take the repository and password from the deployment profile `file`")
	}
}

// peakHeapProfile samples the heap every 100 ms and keeps the profile taken
// at the highest heap use seen.
func peakHeapProfile(ctx context.Context, path string) {
	var peak uint64
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak {
			peak = ms.HeapInuse
			if f, err := os.Create(path); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}
	}
}

// envDuration is the duration in environment variable name, or zero when it
// is unset or not a duration (the flag's parsing then reports nothing: the
// default applies).
// envInt is the integer in environment variable name, or 0.
func envInt(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		return 0
	}
	return n
}

func envDuration(name string) time.Duration {
	d, err := time.ParseDuration(os.Getenv(name))
	if err != nil {
		return 0
	}
	return d
}
