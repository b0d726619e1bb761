package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/pgwal"
	"github.com/cairn-backup/cairn/internal/walarchive"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/cache"
)

// exitRecoveryAbort is wal-fetch's exit code for every failure but a
// missing file: above 125, PostgreSQL stops recovery instead of taking
// the failure for the end of the archive and promoting too early.
const exitRecoveryAbort = 126

// walClientDir is a directory of this machine's state about the WAL that
// server sys archives into the repository (acknowledged pushes, prefetched
// files); "" without a cache directory. It reads the repository's sealed
// config (which names it), not the key.
func (a *app) walClientDir(ctx context.Context, kind, sys string) (string, error) {
	be, err := a.openBackend()
	if err != nil {
		return "", err
	}
	cfgData, err := repo.ReadConfig(ctx, be)
	be.Close()
	if err != nil {
		return "", err
	}
	base := a.keyHintBase()
	if base == "" {
		return "", nil
	}
	return filepath.Join(cache.ClientFile(base, kind, cfgData), sys), nil
}

// dataDirSystemID returns the system identifier of the cluster in dir
// (PostgreSQL runs archive_command and restore_command in its data
// directory, so the default is the working directory).
func dataDirSystemID(dir string) (string, error) {
	if dir == "" {
		dir = "."
	}
	id, err := pgwal.SystemID(dir)
	if err != nil {
		return "", fmt.Errorf("%w (run in the data directory, as archive_command does, or give --pg-data)", err)
	}
	return strconv.FormatUint(id, 10), nil
}

// fileHash is the plain content hash an acknowledgement holds.
func fileHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := crypto.NewHasher()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return h.Sum().String(), nil
}

func (a *app) walPushCommand() *cobra.Command {
	var dataDir string
	var batch int
	cmd := &cobra.Command{
		Use:   "wal-push PATH",
		Short: "Archive a WAL file (PostgreSQL's archive_command: cairn wal-push %p)",
		Long: `wal-push stores a file of PostgreSQL's write-ahead log in the repository and
exits 0 only once it is durable there (its packs, index and record written).
It takes along up to --batch files that pg_wal/archive_status lists as
ready, so that one run (and one key derivation) serves several segments;
PostgreSQL's later calls for those find them acknowledged on this machine
and return at once. A file archived before with the same content exits 0;
with different content it fails loudly. Every ordinary failure exits 1.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.dieBySignal = true
			return a.walPush(cmd.Context(), args[0], dataDir, batch)
		},
	}
	cmd.Flags().StringVar(&dataDir, "pg-data", "", "the server's data `directory` (default: the working directory, where PostgreSQL runs archive_command)")
	cmd.Flags().IntVar(&batch, "batch", 64, "archive up to `N` ready WAL files in one run")
	return cmd
}

func (a *app) walPush(ctx context.Context, path, dataDir string, batch int) error {
	sys, err := dataDirSystemID(dataDir)
	if err != nil {
		return err
	}
	sysID, _ := strconv.ParseUint(sys, 10, 64)
	if !filepath.IsAbs(path) {
		if path, err = filepath.Abs(path); err != nil {
			return err
		}
	}
	name := filepath.Base(path)
	if _, err := pgwal.ParseName(name); err != nil {
		return err
	}
	acks, err := a.walClientDir(ctx, "wal-acks", sys)
	if err != nil {
		return err
	}
	acked := func(p string) bool {
		if acks == "" {
			return false
		}
		want, err := os.ReadFile(filepath.Join(acks, filepath.Base(p)))
		if err != nil {
			return false
		}
		got, err := fileHash(p)
		return err == nil && got == string(want)
	}
	if acked(path) {
		// Pushed by an earlier run that took it along. PostgreSQL asks
		// for each file once: the acknowledgement has served.
		_ = os.Remove(filepath.Join(acks, name))
		return nil
	}
	if acks != "" {
		cleanSpool(acks, 7*24*time.Hour) // acknowledgements PostgreSQL never asked for
	}
	paths := []string{path}
	ready, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "archive_status", "*.ready"))
	sort.Strings(ready)
	for _, rd := range ready {
		if len(paths) >= batch {
			break
		}
		p := filepath.Join(filepath.Dir(path), strings.TrimSuffix(filepath.Base(rd), ".ready"))
		if p == path || acked(p) {
			continue
		}
		if _, err := pgwal.ParseName(filepath.Base(p)); err == nil {
			paths = append(paths, p)
		}
	}
	r, err := a.openRepo(ctx, true)
	if err != nil {
		return err
	}
	defer r.Close()
	host, _ := os.Hostname()
	p := &walarchive.Pusher{Repo: r, SystemID: sysID, Hostname: host}
	res, err := p.Push(ctx, paths)
	if err != nil {
		return fmt.Errorf("wal-push %s: %w", name, err)
	}
	var first error
	for _, pr := range res {
		switch {
		case pr.Err != nil && pr.Path == path:
			first = pr.Err
		case pr.Err != nil:
			a.warnf("wal-push: %s not taken along: %v", pr.Name, pr.Err)
		case acks != "":
			h, err := fileHash(pr.Path)
			if err == nil {
				err = cache.WriteClientFile(filepath.Join(acks, pr.Name), []byte(h))
			}
			if err != nil {
				a.warnf("wal-push: cannot acknowledge %s in %s: %v", pr.Name, acks, err)
			}
		}
	}
	if first != nil {
		if errors.Is(first, walarchive.ErrConflict) {
			return fmt.Errorf("wal-push: ERROR: %w: refusing to archive it again; another server or a restored copy of this one may be archiving into this repository", first)
		}
		return fmt.Errorf("wal-push: %w", first)
	}
	return nil
}

func (a *app) walFetchCommand() *cobra.Command {
	var dataDir, sysFlag string
	var prefetch int
	cmd := &cobra.Command{
		Use:   "wal-fetch NAME PATH",
		Short: "Write an archived WAL file (PostgreSQL's restore_command: cairn wal-fetch %f %p)",
		Long: `wal-fetch writes the archived WAL file NAME to PATH for a server in
recovery. It exits 0 when the file was written and 1 when the archive does
not hold it (so recovery ends there); any other failure (an unreachable
repository, a wrong password, damage) exits 126, which makes PostgreSQL
stop recovery rather than end it early. It fetches the next --prefetch
segments too, into this machine's cache directory, where the next calls
find them.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.dieBySignal = true
			err := a.walFetch(cmd.Context(), args[0], args[1], dataDir, sysFlag, prefetch)
			var nf *walNotFound
			if err == nil || errors.As(err, &nf) || cmd.Context().Err() != nil {
				return err
			}
			return &exitCodeError{code: exitRecoveryAbort, err: err}
		},
	}
	cmd.Flags().StringVar(&dataDir, "pg-data", "", "the recovering server's data `directory` (default: the working directory)")
	cmd.Flags().StringVar(&sysFlag, "system-id", "", "fetch the WAL of database system `ID` instead of the data directory's")
	cmd.Flags().IntVar(&prefetch, "prefetch", 8, "also fetch the next `N` segments for the calls that follow")
	return cmd
}

// walNotFound is wal-fetch's "not archived" (exit 1).
type walNotFound struct{ name string }

func (e *walNotFound) Error() string { return e.name + " is not in the archive" }

func (a *app) walFetch(ctx context.Context, name, dst, dataDir, sys string, prefetch int) error {
	if _, err := pgwal.ParseName(name); err != nil {
		return err
	}
	var err error
	if sys == "" {
		if sys, err = dataDirSystemID(dataDir); err != nil {
			return err
		}
	}
	if !filepath.IsAbs(dst) {
		if dst, err = filepath.Abs(dst); err != nil {
			return err
		}
	}
	spool, err := a.walClientDir(ctx, "wal-prefetch", sys)
	if err != nil {
		return err
	}
	if spool != "" {
		cleanSpool(spool, time.Hour)
		if err := moveFile(filepath.Join(spool, name), dst); err == nil {
			return nil
		}
	}
	r, err := a.openRepo(ctx, true)
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := r.LoadWALFile(ctx, sys, name)
	if backend.IsNotFound(err) {
		return &walNotFound{name}
	}
	if err != nil {
		return err
	}
	done, err := walarchive.Fetch(ctx, r, sys, []string{name}, func(string) string { return dst }, a.downloadsFor(r))
	if err != nil {
		return err
	}
	if len(done) == 0 {
		return &walNotFound{name} // removed since it was looked up
	}
	// The next segments, for the calls that follow; recovery does not
	// wait on them failing (each call fetches its own file again).
	if spool != "" && prefetch > 0 && f.SegmentSize > 0 {
		if err := os.MkdirAll(spool, 0o700); err == nil {
			next := walarchive.NextSegments(name, prefetch, f.SegmentSize)
			if _, err := walarchive.Fetch(ctx, r, sys, next, func(n string) string { return filepath.Join(spool, n) }, a.downloadsFor(r)); err != nil {
				a.warnf("wal-fetch: prefetch after %s: %v", name, err)
			}
		}
	}
	return nil
}

// moveFile moves src to dst, across file systems if need be.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".cairn-tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Remove(src)
}

// cleanSpool drops files older than maxAge from a directory of client
// state: prefetched files that a recovery which ended (or went to another
// timeline) never asks for, acknowledgements never used.
func cleanSpool(dir string, maxAge time.Duration) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > maxAge {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func (a *app) walStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wal-status",
		Short: "Show the archived WAL of each PostgreSQL server: range, gaps, lag, base backups",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			files, err := r.ListWALFiles(ctx)
			if err != nil {
				return err
			}
			sns, err := r.ListSnapshots(ctx)
			if err != nil {
				return err
			}
			return a.printWALStatus(walarchive.Summarize(files), sns, time.Now())
		},
	}
}

// walStatusJSON is one server of wal-status --json.
type walStatusJSON struct {
	walarchive.Server
	LagSeconds  float64                 `json:"lag_seconds"`
	BaseBackups []walarchive.BaseBackup `json:"base_backups"`
}

func (a *app) printWALStatus(servers []walarchive.Server, sns []*repo.Snapshot, now time.Time) error {
	bases := map[string][]walarchive.BaseBackup{}
	for _, sn := range sns {
		if b, ok := walarchive.BaseOf(sn); ok {
			bases[b.SystemID] = append(bases[b.SystemID], *b)
		}
	}
	if a.jsonOutput {
		out := []walStatusJSON{}
		for _, s := range servers {
			out = append(out, walStatusJSON{Server: s, LagSeconds: now.Sub(s.LastArchived).Seconds(), BaseBackups: bases[s.SystemID]})
		}
		return a.printJSON(out)
	}
	if len(servers) == 0 {
		a.printf("no archived WAL\n")
		return nil
	}
	for _, s := range servers {
		a.printf("system %s: %d files, %s, last archived %s (%s ago), %d base backup(s)\n", s.SystemID, s.Files, formatBytes(uint64(s.Bytes)),
			s.LastArchived.Local().Format("2006-01-02 15:04:05"), now.Sub(s.LastArchived).Round(time.Second), len(bases[s.SystemID]))
		for _, t := range s.Timelines {
			a.printf("  timeline %d: %s .. %s, %d segments", t.Timeline, t.First, t.Last, t.Segments)
			if len(t.Gaps) > 0 {
				a.printf(", %d GAP(S): first after %s", len(t.Gaps), t.Gaps[0].After)
			}
			a.printf("\n")
		}
	}
	return nil
}

// checkBaseWAL warns when a base backup's first WAL segment is not in this
// repository: the server archives somewhere else (or not yet), and the
// backup cannot be recovered from here until it is.
func (a *app) checkBaseWAL(ctx context.Context, r *repo.Repository, sn *repo.Snapshot) {
	if sn == nil {
		return
	}
	b, ok := walarchive.BaseOf(sn)
	if !ok {
		return
	}
	if _, err := r.LoadWALFile(ctx, b.SystemID, b.StartSegment); err != nil {
		a.warnf("base backup of system %s: its first WAL segment %s is not in this repository (%v): recovery needs the server to archive with 'cairn -r %s wal-push %%p'",
			b.SystemID, b.StartSegment, err, a.repoLocation)
	}
}
