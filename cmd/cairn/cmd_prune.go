package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/pruner"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// pruneFlags are shared by prune and forget --prune.
type pruneFlags struct {
	maxUnused string
	grace     time.Duration
	dryRun    bool
}

func (f *pruneFlags) register(cmd *cobra.Command, withDryRun bool) {
	cmd.Flags().StringVar(&f.maxUnused, "max-unused", "5%", "repack packs whose unused share is above `limit` (percent)")
	cmd.Flags().DurationVar(&f.grace, "grace", 24*time.Hour, "delete unused packs only after they have been unused this `long`; must exceed the longest backup that can run meanwhile")
	if withDryRun {
		cmd.Flags().BoolVarP(&f.dryRun, "dry-run", "n", false, "only show what would be done")
	}
}

func (f *pruneFlags) options() (pruner.Options, error) {
	s := strings.TrimSuffix(strings.TrimSpace(f.maxUnused), "%")
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v >= 100 {
		return pruner.Options{}, fmt.Errorf("invalid --max-unused %q: want a percentage such as 5%%", f.maxUnused)
	}
	if f.grace < 0 {
		return pruner.Options{}, fmt.Errorf("invalid --grace %v", f.grace)
	}
	maxUnused := v / 100
	if maxUnused == 0 {
		maxUnused = 1e-12 // "0%": repack any pack with unused data
	}
	return pruner.Options{MaxUnused: maxUnused, Grace: f.grace, DryRun: f.dryRun}, nil
}

func (a *app) pruneCommand() *cobra.Command {
	var f pruneFlags
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove data no snapshot uses (two-phase, safe while backups run)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			return a.runPrune(ctx, r, f)
		},
	}
	f.register(cmd, true)
	return cmd
}

// pruneAfterForget runs prune with default settings (forget --prune).
func (a *app) pruneAfterForget(ctx context.Context, r *repo.Repository) error {
	return a.runPrune(ctx, r, pruneFlags{maxUnused: "5%", grace: 24 * time.Hour})
}

func (a *app) runPrune(ctx context.Context, r *repo.Repository, f pruneFlags) error {
	opts, err := f.options()
	if err != nil {
		return err
	}
	if !a.quiet && !a.jsonOutput {
		opts.Log = func(format string, args ...any) { fmt.Fprintf(a.stdout, format+"\n", args...) }
	}
	locked := r.Config().ObjectLock != nil && !f.dryRun
	var early backend.PurgeStats
	if locked {
		// First bring back packs someone else hid, which prune would
		// take for damage, and delete what earlier runs removed.
		if early, err = a.purgeLocked(ctx, r, time.Now()); err != nil {
			return err
		}
	}
	st, err := pruner.Prune(ctx, r, opts)
	if err != nil {
		return err
	}
	var lock *lockJSON
	if locked {
		// The removals above only hid objects; purge those whose lock
		// has passed, and report the rest.
		if lock, err = a.lockMaintenance(ctx, r, early); err != nil {
			return err
		}
	}
	if a.jsonOutput {
		if err := a.printJSON(newPruneJSON(st, f.dryRun)); err != nil || lock == nil {
			return err
		}
		return a.printJSON(lock)
	}
	verb := "freed"
	switch {
	case f.dryRun:
		verb = "would free"
	case locked:
		verb = "removed" // hidden: the space is freed as the locks pass
	}
	a.printf("%s %s now; %s in %d packs await deletion after the %v grace period\n", verb, formatBytes(uint64(st.BytesFreed)), formatBytes(uint64(st.BytesPending)), st.PacksMarked+st.PacksPending+st.PacksRepacked+st.StrayPacks, f.grace)
	if st.PacksRepacked > 0 {
		a.printf("repacked %d blobs (%s) out of %d packs\n", st.BlobsRepacked, formatBytes(uint64(st.BytesRepacked)), st.PacksRepacked)
	}
	return nil
}
