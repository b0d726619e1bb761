package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/seen"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/cache"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/s3"
)

// openBackend parses the repository location.
func (a *app) openBackend() (backend.Backend, error) {
	if a.repoLocation == "" {
		return nil, &exitCodeError{exitError, errors.New("no repository given: use -r/--repo or set CAIRN_REPOSITORY")}
	}
	return a.openBackendAt(a.repoLocation, nil)
}

// envWithPrefix looks variables up in the environment under prefix+name.
func envWithPrefix(prefix string) func(string) (string, bool) {
	return func(name string) (string, bool) { return os.LookupEnv(prefix + name) }
}

// openBackendAt parses a repository location. An S3 repository takes its
// credentials and region (AWS_ACCESS_KEY_ID, ...) from creds where that
// has them (the CAIRN_FROM_ variables of a source repository, an
// offsite's env_file), else from the environment.
func (a *app) openBackendAt(loc string, creds func(name string) (string, bool)) (backend.Backend, error) {
	switch {
	case strings.HasPrefix(loc, "local:"):
		return local.Open(strings.TrimPrefix(loc, "local:"))
	case strings.HasPrefix(loc, "s3:"):
		// Credentials, region and CA file come from the environment
		// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
		// AWS_DEFAULT_REGION, CAIRN_S3_CA_FILE).
		cfg, err := s3.Parse(loc)
		if err != nil {
			return nil, &exitCodeError{exitError, err}
		}
		if creds != nil {
			for v, field := range map[string]*string{"AWS_ACCESS_KEY_ID": &cfg.AccessKeyID, "AWS_SECRET_ACCESS_KEY": &cfg.SecretAccessKey,
				"AWS_SESSION_TOKEN": &cfg.SessionToken, "AWS_DEFAULT_REGION": &cfg.Region} {
				if val, ok := creds(v); ok {
					*field = val
				}
			}
		}
		if a.s3Region != "" {
			cfg.Region = a.s3Region
		}
		if a.s3CAFile != "" {
			cfg.CAFile = a.s3CAFile
		}
		if cfg.PlainOverNetwork() {
			fmt.Fprintf(a.stderr, "warning: s3 over plain HTTP to %s: request signatures and object names cross the network unencrypted (the data itself is encrypted); use https\n", cfg.Endpoint)
		}
		cfg.StallTimeout, cfg.MaxRetryTime = a.s3StallTimeout, a.s3RetryTime
		cfg.OnRetry = func(op string, attempt int, err error, delay time.Duration) {
			// Every retry is logged, so a job whose bucket does not answer
			// says so while it waits, not only when it gives up.
			fmt.Fprintf(a.stderr, "warning: s3 %s: attempt %d failed: %v; retrying in %v\n", op, attempt, err, delay.Round(time.Millisecond))
		}
		be, err := s3.Open(context.Background(), cfg)
		if err != nil {
			return nil, &exitCodeError{exitError, err}
		}
		return be, nil
	case strings.Contains(loc, ":") && !strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "."):
		if i := strings.Index(loc, ":"); i > 1 {
			return nil, &exitCodeError{exitError, fmt.Errorf("repository %q: unknown backend %q (use /path, local:/path, s3:https://host/bucket)", loc, loc[:i])}
		}
	}
	return local.Open(loc)
}

// repoOptions are the repository options from global flags: concurrent
// pack uploads default to 2 on a local disk and 6 on S3, where each upload
// waits on the network.
func (a *app) repoOptions(be backend.Backend) repo.Options {
	o := repo.Options{Uploads: a.uploads, WrapBackend: a.cacheWrapper(be)}
	if o.Uploads <= 0 {
		o.Uploads = 2
		if remote(be) {
			o.Uploads = 6
		}
	}
	if remote(be) {
		// A round trip costs about what 4 MiB take to arrive: read delta
		// bases in windows of that size (8 are kept: 32 MiB).
		o.BaseWindow = 4 << 20
	}
	return o
}

// downloadsFor is the number of pack ranges restore and dump read at once:
// --downloads, else 8 on S3, where each read waits a round trip, and 4 on
// a local disk.
func (a *app) downloadsFor(r *repo.Repository) int {
	if a.downloads > 0 {
		return a.downloads
	}
	if remote(r.Backend()) {
		return 8
	}
	return 4
}

// remote reports whether be is across a network, where each request costs
// a round trip.
func remote(be backend.Backend) bool { return strings.HasPrefix(be.Location(), "s3:") }

// cacheWrapper returns how a remote repository gets its local metadata
// cache (repo/backend/cache) once its ID is known: the persistent one
// under --cache-dir, CAIRN_CACHE_DIR, $XDG_CACHE_HOME/cairn or
// ~/.cache/cairn; a temporary one for --no-cache, for commands that must
// read the repository itself (check), or when the persistent one cannot
// be used (with one warning); none if even that fails. A local repository
// is its own cache.
func (a *app) cacheWrapper(be backend.Backend) func(string, backend.Backend) backend.Backend {
	if !remote(be) {
		return nil
	}
	warn := func(err error) { fmt.Fprintf(a.stderr, "warning: %v\n", err) }
	return func(id string, be backend.Backend) backend.Backend {
		if !a.noCache && !a.tempCache {
			base, err := a.cacheBase()
			var c *cache.Cache
			if err == nil {
				c, err = cache.Open(base, id, warn)
			}
			if err == nil {
				return cache.Wrap(be, c)
			}
			warn(fmt.Errorf("%v; going on with a temporary cache", err))
		}
		c, err := cache.OpenTemp(warn)
		if err != nil {
			warn(fmt.Errorf("%v; going on without a cache", err))
			return be
		}
		return cache.Wrap(be, c)
	}
}

// observeSnapshots compares a complete listing of the snapshots with the
// newest ones this machine saw before, and warns about each that is gone:
// the repository cannot tell a snapshot deleted by someone else, or a
// repository put back to an older state, from one that never had them.
func (a *app) observeSnapshots(sns []*repo.Snapshot) {
	a.seenMu.Lock()
	defer a.seenMu.Unlock()
	for _, e := range a.seen.Observe(sns) {
		fmt.Fprintf(a.stderr, "warning: snapshot %s (%s of %s at %s), the newest this machine had seen of them, is gone from the repository: removed elsewhere, or the repository was put back to an older state\n",
			e.ID.Short(), strings.Join(e.Paths, ", "), e.Host, e.Time.Local().Format("2006-01-02 15:04:05"))
	}
	_ = a.seen.Save() // a read-only cache only loses the memory
}

// forgetSeen tells the memory of seen snapshots that this machine removed
// ids (forget), or gave them new IDs (migrate: renamed non-nil).
func (a *app) forgetSeen(ids []crypto.ID, renamed map[crypto.ID]crypto.ID) {
	if a.seen == nil {
		return
	}
	a.seenMu.Lock()
	defer a.seenMu.Unlock()
	a.seen.Forget(ids)
	for old, new := range renamed {
		a.seen.Rename(old, new)
	}
	_ = a.seen.Save()
}

// keyHintBase is the cache directory where the key file that opened a
// repository is remembered (cache.KeyHint), or "" with --no-cache.
func (a *app) keyHintBase() string {
	if a.noCache {
		return ""
	}
	base, err := a.cacheBase()
	if err != nil {
		return ""
	}
	return base
}

// cacheBase is the directory that holds the local caches: --cache-dir, or
// cache.DefaultBase.
func (a *app) cacheBase() (string, error) {
	if a.cacheDir != "" {
		return a.cacheDir, nil
	}
	return cache.DefaultBase()
}

// passwordWithoutPrompt returns the password when it comes from a file
// or the environment, which costs nothing to read early; a password
// command or a prompt waits for the repository to be found.
func (a *app) passwordWithoutPrompt() (string, bool) {
	switch {
	case a.passwordFile != "":
		pw, err := readPassword(context.Background(), a.passwordFile, "", "", "", false)
		return pw, err == nil
	case a.passwordCommand != "":
		return "", false
	}
	return os.LookupEnv("CAIRN_PASSWORD")
}

// password returns the repository password from, in order: --password-file
// (or CAIRN_PASSWORD_FILE), --password-command (or CAIRN_PASSWORD_COMMAND),
// CAIRN_PASSWORD, or a prompt on the terminal.
func (a *app) password(ctx context.Context, prompt string, confirm bool) (string, error) {
	return readPassword(ctx, a.passwordFile, a.passwordCommand, "CAIRN_PASSWORD", prompt, confirm)
}

// readPassword returns a password from file, else the output of command,
// else the environment variable env, else a prompt on the terminal.
func readPassword(ctx context.Context, file, command, env, prompt string, confirm bool) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if command != "" {
		return runPasswordCommand(ctx, command)
	}
	if pw, ok := os.LookupEnv(env); ok {
		return pw, nil
	}
	return promptPassword(prompt, confirm)
}

func runPasswordCommand(ctx context.Context, command string) (string, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("password command failed: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimRight(out.String(), "\r\n"), nil
}

func promptPassword(prompt string, confirm bool) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return "", &exitCodeError{exitError, errors.New("no password: set CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND, or run on a terminal")}
	}
	defer tty.Close()
	read := func(p string) (string, error) {
		fmt.Fprint(tty, p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	pw, err := read(prompt)
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := read("enter the password again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", errors.New("passwords do not match")
		}
	}
	return pw, nil
}

// openRepo opens the repository; with loadIndex it also reads the index.
// The index listing (with loadIndex) and the listings of listAhead start
// right away on remote storage, alongside the key derivation.
func (a *app) openRepo(ctx context.Context, loadIndex bool, listAhead ...backend.FileType) (*repo.Repository, error) {
	be, err := a.openBackend()
	if err != nil {
		return nil, err
	}
	hintBase := a.keyHintBase()
	// With a password that needs no prompt, the derivation of the key that
	// opened this repository last time starts now, from a local copy of
	// its key file, while the config and the key file itself arrive: on S3
	// that hides three round trips behind it.
	var early *earlyKey
	pw, pwKnown := a.passwordWithoutPrompt()
	if pwKnown && hintBase != "" && remote(be) {
		early = startEarlyKey(hintBase, be.Location(), pw)
	}
	// Fail fast on a missing repository before asking for a password.
	cfgData, err := repo.ReadConfig(ctx, be)
	if err != nil {
		if errors.Is(err, repo.ErrNoRepository) {
			return nil, fmt.Errorf("%w (create one with 'cairn init')", err)
		}
		return nil, fmt.Errorf("open repository %s: %w", be.Location(), err)
	}
	if !pwKnown {
		if pw, err = a.password(ctx, "enter the repository password: ", false); err != nil {
			return nil, err
		}
	}
	opts := a.repoOptions(be)
	if loadIndex {
		opts.ListAhead = append(opts.ListAhead, backend.Index)
	}
	opts.ListAhead = append(opts.ListAhead, listAhead...)
	if hintBase != "" {
		opts.PreferKey = cache.KeyHint(hintBase, cfgData)
		a.seen = seen.Open(hintBase, cfgData)
		opts.SnapshotsListed = a.observeSnapshots
	}
	if early != nil && early.name == opts.PreferKey {
		opts.DerivedKey = early.wait
	}
	r, err := repo.OpenConfig(ctx, be, cfgData, pw, opts)
	if early != nil && (err != nil || r.KeyID() != early.name) {
		// The copy did not open the repository: the key file is gone
		// (removed, perhaps for a leaked password) or belongs to another
		// password. It is not kept.
		cache.RemoveKeyCopy(hintBase, early.name)
	}
	if err != nil {
		return nil, err
	}
	// Only hints: a read-only cache costs the usual key order.
	if hintBase != "" && r.KeyID() != opts.PreferKey {
		_ = cache.SaveKeyHint(hintBase, cfgData, r.KeyID())
	}
	if hintBase != "" && remote(be) && (early == nil || early.name != r.KeyID()) && r.KeyFile() != nil {
		_ = cache.SaveLocationKey(hintBase, be.Location(), r.KeyID(), r.KeyFile())
	}
	if loadIndex {
		if err := r.LoadIndex(ctx); err != nil {
			r.Close()
			if errors.Is(err, repo.ErrIndexDamaged) {
				return nil, fmt.Errorf("load index: %w (run 'cairn check' to see what is damaged)", err)
			}
			return nil, fmt.Errorf("load index: %w", err)
		}
	}
	a.setMemoryLimit(r)
	return r, nil
}

// earlyKey is a key derivation started before the repository is opened
// (repo.Options.DerivedKey).
type earlyKey struct {
	name string // the key file
	done chan struct{}
	key  *crypto.Key
	err  error
}

// startEarlyKey starts deriving, with pw, the key of the key file that
// opened the repository at location last time, from the copy kept under
// base; nil when there is none.
func startEarlyKey(base, location, pw string) *earlyKey {
	name, data := cache.LocationKey(base, location)
	if name == "" {
		return nil
	}
	kf, err := crypto.ParseKeyFile(data) // bounds the derivation's cost
	if err != nil {
		return nil
	}
	e := &earlyKey{name: name, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		e.key, e.err = kf.Open(pw)
	}()
	return e
}

func (e *earlyKey) wait() (*crypto.Key, error) {
	<-e.done
	return e.key, e.err
}

// Soft memory limits before the index is counted (setMemoryLimit). The
// Go runtime lets the heap grow to twice its live size and returns freed
// pages lazily, so without a limit the peak RSS of a backup is three times
// its working set. A limit near the working set, on the other hand, makes
// the collector run continuously (a limit of 80 MiB made restores of many
// small files two to three times slower). Measured peaks of the live heap:
// about 60 MB for a nightly database backup, 110 MB for a first backup of
// a tree of large files, 190 MB for a restore of 43,000 files from S3 (its
// pack windows, repo.ReadOptions.Budget, take 16 MiB per download).
const (
	backupMemoryBase  = 144 << 20
	defaultMemoryBase = 256 << 20
)

// setMemoryLimit sets a soft limit on the Go heap of a.memoryBase (the
// default one unless the command chose another) plus twice the in-memory
// index, unless GOMEMLIMIT is set. Above the limit the collector only
// works harder, it never fails.
func (a *app) setMemoryLimit(r *repo.Repository) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	base := a.memoryBase
	if base == 0 {
		base = defaultMemoryBase
	}
	debug.SetMemoryLimit(base + 2*int64(r.Index().MemoryBytes()))
}
