package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/cache"
)

// objectLockOption turns init's --s3-object-lock and --s3-lock-days into
// the repository option (nil when neither is given).
func objectLockOption(mode string, days float64) (*repo.ObjectLockConfig, error) {
	if mode == "" && days == 0 {
		return nil, nil
	}
	if mode == "" {
		return nil, errors.New("--s3-lock-days needs --s3-object-lock governance|compliance")
	}
	m, err := backend.ParseLockMode(mode)
	if err != nil {
		return nil, err
	}
	secs := math.Round(days * 86400)
	if days <= 0 || secs < 1 || secs > 100*365*86400 {
		return nil, fmt.Errorf("--s3-object-lock needs --s3-lock-days N (more than a second, at most 100 years), got %v", days)
	}
	return &repo.ObjectLockConfig{Mode: m, RetentionSeconds: int64(secs)}, nil
}

// formatPeriod prints a retention period in days when it is a day or
// more, else as a duration (short periods are for tests).
func formatPeriod(d time.Duration) string {
	if d >= 24*time.Hour {
		return fmt.Sprintf("%.4g days", d.Hours()/24)
	}
	return d.Round(time.Second).String()
}

// lockRecord is what this machine remembers of the last complete
// extension: every object that existed then is locked until Until at
// least, so the next pass is due only when half the period is left.
type lockRecord struct {
	Extended time.Time `json:"extended"`
	Until    time.Time `json:"until"`
	Objects  int       `json:"objects"`
}

func (a *app) lockRecordPath(repoID string) string {
	base := a.keyHintBase() // the cache directory, "" with --no-cache
	if base == "" {
		return ""
	}
	return filepath.Join(base, "locks", repoID)
}

func (a *app) readLockRecord(repoID string) (lockRecord, bool) {
	var rec lockRecord
	p := a.lockRecordPath(repoID)
	if p == "" {
		return rec, false
	}
	data, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(data, &rec) != nil || rec.Until.IsZero() {
		return lockRecord{}, false
	}
	return rec, true
}

// extensionDue reports whether a repository's objects need their
// retention extended now: no pass recorded on this machine, or less than
// half the period left since the last one.
func (a *app) extensionDue(r *repo.Repository, now time.Time) (bool, lockRecord) {
	period := r.Config().ObjectLock.Lock().Period
	rec, ok := a.readLockRecord(r.Config().ID)
	if !ok {
		return true, rec
	}
	return rec.Until.Sub(now) < period/2, rec
}

// extendLocks runs one extension pass and records it.
func (a *app) extendLocks(ctx context.Context, r *repo.Repository) (int, time.Time, error) {
	start := time.Now()
	n, until, err := r.ExtendRetention(ctx, start, nil)
	if err != nil {
		return n, until, err
	}
	if p := a.lockRecordPath(r.Config().ID); p != "" {
		data, _ := json.Marshal(lockRecord{Extended: start, Until: until, Objects: n})
		if werr := cache.WriteClientFile(p, data); werr != nil {
			a.warnf("cannot remember the retention extension in %s: %v", p, werr)
		}
	}
	return n, until, nil
}

func (a *app) lockCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Keep the objects of a repository with S3 Object Lock locked",
	}
	var force bool
	extend := &cobra.Command{
		Use:   "extend",
		Short: "Extend the retention of every object still in the repository, when half the period is gone",
		Long: `extend moves the retain-until date of every object the repository still
holds (config, keys, index files, snapshots, packs) to now plus the
retention period, one request per object. It runs only when this machine
has no record of a pass, or less than half the period is left since the
last one (--force runs it anyway); forget --prune runs it too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			if r.Config().ObjectLock == nil {
				return repo.ErrNoObjectLock
			}
			now := time.Now()
			due, rec := a.extensionDue(r, now)
			if !due && !force {
				if a.jsonOutput {
					return a.printJSON(lockJSON{MessageType: "lock_extend", Until: rec.Until, LastPass: rec.Extended})
				}
				a.printf("not due: the last pass from this machine (%s) locked every object until %s; the next is due after %s (--force to run now)\n",
					rec.Extended.Format(time.RFC3339), rec.Until.Format(time.RFC3339), rec.Until.Add(-r.Config().ObjectLock.Lock().Period/2).Format(time.RFC3339))
				return nil
			}
			n, until, err := a.extendLocks(ctx, r)
			if err != nil {
				return err
			}
			if a.jsonOutput {
				return a.printJSON(lockJSON{MessageType: "lock_extend", Extended: n, Until: until, LastPass: now})
			}
			a.printf("locked %d objects until %s\n", n, until.Format(time.RFC3339))
			return nil
		},
	}
	extend.Flags().BoolVar(&force, "force", false, "extend even if the last pass left more than half the period")
	cmd.AddCommand(extend)
	return cmd
}

// purgeLocked runs a purge with what this machine knows of the last
// extension.
func (a *app) purgeLocked(ctx context.Context, r *repo.Repository, now time.Time) (backend.PurgeStats, error) {
	rec, _ := a.readLockRecord(r.Config().ID)
	return r.PurgeLocked(ctx, now, rec.Extended, rec.Until)
}

// lockMaintenance is what prune does on a repository with object lock:
// delete what was removed and has come unlocked, report what stays
// locked until when, and extend the retention when it is due.
// early is what a purge before the prune did (its Locked counts are
// superseded by this one's).
func (a *app) lockMaintenance(ctx context.Context, r *repo.Repository, early backend.PurgeStats) (*lockJSON, error) {
	now := time.Now()
	st, err := a.purgeLocked(ctx, r, now)
	if err != nil {
		return nil, err
	}
	st.Deleted += early.Deleted
	st.DeletedBytes += early.DeletedBytes
	st.Restored += early.Restored
	st.Foreign += early.Foreign
	out := &lockJSON{MessageType: "lock_maintenance", Purged: st.Deleted, PurgedBytes: st.DeletedBytes,
		Locked: st.Locked, LockedBytes: st.LockedBytes, Restored: st.Restored, Foreign: st.Foreign, Overwritten: st.Overwritten}
	if !st.FirstUnlock.IsZero() {
		out.FirstUnlock, out.LastUnlock = &st.FirstUnlock, &st.LastUnlock
	}
	if st.Deleted > 0 {
		a.printf("deleted %d removed objects whose lock has passed (%s)\n", st.Deleted, formatBytes(uint64(st.DeletedBytes)))
	}
	if st.Locked > 0 {
		a.printf("%d removed objects (%s) stay locked: deletable from %s to %s, by a prune then\n", st.Locked, formatBytes(uint64(st.LockedBytes)),
			st.FirstUnlock.Format(time.RFC3339), st.LastUnlock.Format(time.RFC3339))
	}
	if st.Restored > 0 {
		a.warnf("%d objects had been removed by someone else (not by cairn, or packs the index lists): made visible again", st.Restored)
	}
	if st.Overwritten > 0 {
		a.warnf("%d objects were overwritten (not by cairn, which writes once); their older versions are kept", st.Overwritten)
	}
	if due, _ := a.extensionDue(r, now); due {
		n, until, err := a.extendLocks(ctx, r)
		if err != nil {
			return out, err
		}
		out.Extended, out.Until = n, until
		a.printf("locked %d objects until %s\n", n, until.Format(time.RFC3339))
	}
	return out, nil
}
