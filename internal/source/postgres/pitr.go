package postgres

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/pgstream"
	"github.com/cairn-backup/cairn/internal/pgwal"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/walarchive"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
	"github.com/cairn-backup/cairn/tree"
)

// PITROptions say what a point-in-time recovery restores, to when, and
// where. Exactly one target is set: At, LSN, XID, Name or Latest.
type PITROptions struct {
	Repo     *repo.Repository
	Out      source.Out
	DataDir  string // the new data directory (absent or empty)
	SystemID string // which server, when the repository holds several
	// Base, when set, is the snapshot whose base backup to start from,
	// instead of the newest one before the target.
	Base *repo.Snapshot

	At     time.Time
	LSN    string
	XID    string
	Name   string
	Latest bool

	// RestoreCommand is the restore_command written into the data
	// directory (cairn ... wal-fetch %f %p).
	RestoreCommand string
	// Action is recovery_target_action: promote (default), pause or
	// shutdown.
	Action string

	// Verify starts a temporary server that replays the WAL, and reports
	// where recovery ended and the row counts.
	Verify     bool
	Bin        string // pg_ctl's directory (default PATH)
	VerifyUser string // the role to connect as (default postgres)
	Downloads  int
}

// PITRResult is what a point-in-time recovery did.
type PITRResult struct {
	Snapshot    string                 `json:"snapshot_id"`
	Base        walarchive.BaseBackup  `json:"base_backup"`
	DataDir     string                 `json:"data_dir"`
	Target      string                 `json:"target"`
	LastWAL     string                 `json:"last_wal"`      // the newest segment recovery can reach
	LastArchive time.Time              `json:"last_archived"` // when it was archived
	Verified    bool                   `json:"verified"`
	ReplayedTo  *time.Time             `json:"replayed_to,omitempty"` // the last transaction replayed
	Tables      map[string][]TableRows `json:"tables,omitempty"`
}

// TableRows is one table's row count after recovery.
type TableRows = pgstream.TableCount

// ErrTargetUnreachable is wrapped when the archive cannot take recovery to
// the target.
var ErrTargetUnreachable = errors.New("recovery target not reachable")

// RestorePITR picks the newest base backup before the target, restores it
// into DataDir, and configures recovery to the target with the archived
// WAL; with Verify it runs that recovery.
func RestorePITR(ctx context.Context, o PITROptions) (*PITRResult, error) {
	sns, err := o.Repo.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	type cand struct {
		sn *repo.Snapshot
		b  *walarchive.BaseBackup
	}
	var cands []cand
	systems := map[string]bool{}
	if o.Base != nil {
		if _, ok := walarchive.BaseOf(o.Base); !ok {
			return nil, fmt.Errorf("snapshot %s holds no base backup (cairn backup --pg-base)", o.Base.ID.Short())
		}
		sns = []*repo.Snapshot{o.Base}
	}
	for _, sn := range sns {
		b, ok := walarchive.BaseOf(sn)
		if !ok || (o.SystemID != "" && b.SystemID != o.SystemID) {
			continue
		}
		cands = append(cands, cand{sn, b})
		systems[b.SystemID] = true
	}
	if len(cands) == 0 {
		return nil, errors.New("no base backup in the repository (take one with 'cairn backup --pg-base URL')")
	}
	if len(systems) > 1 {
		var ids []string
		for id := range systems {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		return nil, fmt.Errorf("base backups of several servers (system %s): choose one with --pg-system-id", strings.Join(ids, ", "))
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].b.StopTime.Before(cands[j].b.StopTime) })
	var target *lsnTarget
	if o.LSN != "" {
		l, err := pgwal.ParseLSN(o.LSN)
		if err != nil {
			return nil, err
		}
		target = &lsnTarget{l}
	}
	pick := -1
	for i, c := range cands {
		stop, err := pgwal.ParseLSN(c.b.StopLSN)
		switch {
		case err != nil:
		case !o.At.IsZero() && c.b.StopTime.After(o.At):
		case target != nil && stop > target.lsn:
		default:
			pick = i
		}
	}
	if pick < 0 {
		return nil, fmt.Errorf("%w: the oldest base backup finished at %s (WAL %s), after the target", ErrTargetUnreachable,
			cands[0].b.StopTime.Local().Format("2006-01-02 15:04:05"), cands[0].b.StopLSN)
	}
	sn, base := cands[pick].sn, cands[pick].b
	res := &PITRResult{Snapshot: sn.ID.String(), Base: *base, DataDir: o.DataDir}

	// The archive must hold the WAL from the backup's start through its
	// end and on to the target.
	files, err := o.Repo.ListWALFiles(ctx)
	if err != nil {
		return nil, err
	}
	last, lastTime, err := reachable(files, base)
	if err != nil {
		return nil, err
	}
	res.LastWAL, res.LastArchive = last, lastTime
	switch {
	case !o.At.IsZero():
		res.Target = "time " + o.At.Format(time.RFC3339Nano)
		if o.At.After(lastTime) {
			return nil, fmt.Errorf("%w: the archive reaches up to %s, archived at %s, before %s (no WAL archived after that)", ErrTargetUnreachable,
				last, lastTime.Local().Format("2006-01-02 15:04:05"), o.At.Local().Format("2006-01-02 15:04:05"))
		}
	case target != nil:
		res.Target = "lsn " + o.LSN
		n, _ := pgwal.ParseName(last)
		if target.lsn.SegmentNo(base.SegmentSize) > n.SegmentNo(base.SegmentSize) {
			return nil, fmt.Errorf("%w: the archive reaches up to %s, before LSN %s", ErrTargetUnreachable, last, o.LSN)
		}
	case o.XID != "":
		res.Target = "xid " + o.XID
	case o.Name != "":
		res.Target = "restore point " + o.Name
	default:
		res.Target = "the end of the archive"
	}

	if err := prepareDataDir(o.DataDir); err != nil {
		return nil, err
	}
	node, err := tree.Find(ctx, o.Repo, sn.Tree, base.Path)
	if err != nil {
		return nil, fmt.Errorf("base backup in snapshot %s: %w", sn.ID.Short(), err)
	}
	o.Out.Printf("restoring base backup %s of system %s (%s, WAL from %s) into %s\n", sn.ID.Short(), base.SystemID,
		base.StopTime.Local().Format("2006-01-02 15:04:05"), base.StartSegment, o.DataDir)
	if err := extractTar(ctx, o.Repo, node, o.DataDir, o.Downloads); err != nil {
		return nil, err
	}
	if err := writeRecoveryConf(o); err != nil {
		return nil, err
	}
	owner, err := chownLikeParent(o.DataDir)
	if err != nil {
		return nil, err
	}
	o.Out.Printf("recovery to %s configured (restore_command, recovery.signal); the archive reaches %s\n", res.Target, last)
	if !o.Verify {
		return res, nil
	}
	if os.Geteuid() == 0 && owner == "root" {
		return res, fmt.Errorf("--verify: PostgreSQL does not run as root; make %s's parent directory belong to the server's user (chown postgres), then restore again", o.DataDir)
	}
	runAs := ""
	if os.Geteuid() == 0 {
		runAs = owner
	}
	// With a target the check pauses there, so the directory is left in
	// recovery, as restored: the first real start ends it with the chosen
	// action. Without one, recovery ends at the end of the archive and the
	// server is promoted.
	srv, err := pgstream.StartTempServer(ctx, pgstream.TempServerOptions{Tools: pgstream.Tools{Dir: o.Bin}, DataDir: o.DataDir,
		RunAs: runAs, User: o.VerifyUser, Env: os.Environ(), PauseAtTarget: !o.Latest})
	if err != nil {
		return res, err
	}
	defer srv.Stop()
	replayed, err := srv.WaitRecovered(ctx)
	if err != nil {
		return res, err
	}
	if !replayed.IsZero() {
		res.ReplayedTo = &replayed
	}
	if !o.At.IsZero() && !o.Latest {
		log := srv.Log()
		if !strings.Contains(log, "recovery stopping") {
			return res, fmt.Errorf("--verify: recovery ended without reaching %s%s", res.Target, srv.LogTail())
		}
	}
	tables, err := srv.CountRows(ctx)
	if err != nil {
		return res, err
	}
	res.Tables = tables
	res.Verified = true
	for db, ts := range tables {
		var rows int64
		for _, t := range ts {
			rows += t.Rows
		}
		o.Out.Printf("verified: database %s: %d tables, %d rows\n", db, len(ts), rows)
	}
	if res.ReplayedTo != nil {
		o.Out.Printf("verified: recovery replayed transactions up to %s and accepts connections\n", res.ReplayedTo.Local().Format("2006-01-02 15:04:05.000"))
	}
	if o.Latest {
		o.Out.Printf("recovery reached the end of the archive and %s was promoted; archiving is off there (archive_mode)\n", o.DataDir)
	} else {
		o.Out.Printf("%s is left paused at the target, still in recovery: starting it ends recovery (%s); archiving is off there (archive_mode)\n", o.DataDir, cmp.Or(o.Action, "promote"))
	}
	return res, nil
}

type lsnTarget struct{ lsn pgwal.LSN }

// reachable returns the newest WAL segment recovery from base can reach
// without a gap (on the base's timeline or a later one), and when it was
// archived; an error when the archive does not even reach the backup's
// end.
func reachable(files []*repo.WALFile, base *walarchive.BaseBackup) (string, time.Time, error) {
	size := base.SegmentSize
	start, err := pgwal.ParseName(base.StartSegment)
	if err != nil {
		return "", time.Time{}, err
	}
	stop, err := pgwal.ParseLSN(base.StopLSN)
	if err != nil {
		return "", time.Time{}, err
	}
	type seg struct {
		name string
		time time.Time
	}
	segs := map[uint64]seg{}
	for _, f := range files {
		if f.SystemID != base.SystemID {
			continue
		}
		n, err := pgwal.ParseName(f.Name)
		if err != nil || n.Kind != pgwal.Segment || n.Timeline < base.Timeline {
			continue
		}
		no := n.SegmentNo(size)
		if cur, ok := segs[no]; !ok || f.Time.After(cur.time) {
			segs[no] = seg{f.Name, f.Time}
		}
	}
	no := start.SegmentNo(size)
	var last seg
	var lastTime time.Time
	for {
		s, ok := segs[no]
		if !ok {
			break
		}
		last = s
		if s.time.After(lastTime) {
			lastTime = s.time
		}
		no++
	}
	if last.name == "" || no <= stop.SegmentNo(size) {
		missing := pgwal.SegmentName(base.Timeline, no, size)
		return "", time.Time{}, fmt.Errorf("%w: WAL segment %s, which the base backup needs (its WAL runs %s to %s), is not archived; is archive_command working ('cairn wal-status')?",
			ErrTargetUnreachable, missing, base.StartLSN, base.StopLSN)
	}
	return last.name, lastTime, nil
}

// prepareDataDir makes dir, or checks that it is empty.
func prepareDataDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(dir, 0o700)
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%s is not empty: a point-in-time recovery restores into a new data directory", dir)
	}
	return os.Chmod(dir, 0o700)
}

// extractTar writes the base backup's tar stream into dir, through an
// os.Root: no entry (nor a symlink an earlier entry made) reaches outside.
func extractTar(ctx context.Context, r *repo.Repository, n *tree.Node, dir string, downloads int) (err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	pr, pw := io.Pipe()
	dumped := make(chan error, 1)
	go func() {
		err := restorer.Dump(ctx, r, n, pw, downloads)
		pw.CloseWithError(err)
		dumped <- err
	}()
	defer func() {
		pr.Close()
		if derr := <-dumped; err == nil && derr != nil && !errors.Is(derr, io.ErrClosedPipe) {
			err = derr
		}
	}()
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("base backup: %w", err)
		}
		name := filepath.Clean(h.Name)
		if name == "." {
			continue
		}
		mode := os.FileMode(h.Mode) & os.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("base backup: %s: %w", h.Name, err)
			}
			if err := root.Chmod(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if d := filepath.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return fmt.Errorf("base backup: %s: %w", h.Name, err)
				}
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
			if err != nil {
				return fmt.Errorf("base backup: %s: %w", h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("base backup: %s: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("base backup: %s: %w", h.Name, err)
			}
		default:
			return fmt.Errorf("base backup: entry %q of unsupported type %c", h.Name, h.Typeflag)
		}
	}
}

// writeRecoveryConf adds the recovery settings to postgresql.auto.conf
// and creates recovery.signal.
func writeRecoveryConf(o PITROptions) error {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	action := cmp.Or(o.Action, "promote")
	// Archiving is off: a restored copy that archived into the same
	// repository would mix its timeline into the original's history.
	lines := []string{"", "# added by cairn restore --pg-pitr", "restore_command = " + q(o.RestoreCommand),
		"recovery_target_timeline = 'latest'", "recovery_target_action = " + q(action),
		"archive_mode = 'off'  # turn archiving back on when this server replaces the original"}
	switch {
	case !o.At.IsZero():
		lines = append(lines, "recovery_target_time = "+q(o.At.UTC().Format("2006-01-02 15:04:05.999999")+"+00"))
	case o.LSN != "":
		lines = append(lines, "recovery_target_lsn = "+q(o.LSN))
	case o.XID != "":
		lines = append(lines, "recovery_target_xid = "+q(o.XID))
	case o.Name != "":
		lines = append(lines, "recovery_target_name = "+q(o.Name))
	}
	f, err := os.OpenFile(filepath.Join(o.DataDir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.DataDir, "recovery.signal"), nil, 0o600)
}

// chownLikeParent gives the restored files, when cairn runs as root, the
// owner of the data directory's parent (PostgreSQL refuses a data
// directory it does not own), and returns that owner's name.
func chownLikeParent(dir string) (string, error) {
	fi, err := os.Stat(filepath.Dir(dir))
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", nil
	}
	name := strconv.Itoa(int(st.Uid))
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	if os.Geteuid() != 0 || st.Uid == 0 {
		return name, nil
	}
	return name, pgstream.ChownTree(dir, int(st.Uid), int(st.Gid))
}
