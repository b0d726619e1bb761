package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/restorer"
)

func (a *app) restoreCommand() *cobra.Command {
	var target, host, at, config string
	var dryRun, inPlace, deleteExtra bool
	var includes, excludes, tags []string
	var pitr pitrFlags
	sources := newSources()
	cmd := &cobra.Command{
		Use:   "restore (SNAPSHOT | --at TIME) (--target DIR | --pg-target URL | --redis-target URL | --redis-rdb-dir DIR)",
		Short: "Restore a snapshot (ID, unique prefix, 'latest' or --at TIME) into a directory, a database or Redis",
		Args:  cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if pitr.enabled {
				bin, _ := cmd.Flags().GetString("pg-bin")
				return a.pitrRestore(ctx, args, at, target, bin, pitr)
			}
			for _, name := range []string{"lsn", "xid", "target-name", "pg-system-id", "target-action", "verify", "pg-verify-user"} {
				if cmd.Flags().Changed(name) {
					return fmt.Errorf("--%s goes with --pg-pitr", name)
				}
			}
			if config != "" {
				return a.runProfileRestore(ctx, config, args, at, host, target, dryRun, inPlace)
			}
			if dryRun || inPlace {
				return errors.New("--dry-run and --in-place go with --config")
			}
			atTime, err := snapshotOrAt(args, at)
			if err != nil {
				return err
			}
			if target == "" && !slices.ContainsFunc(sources, source.Source.RestoreEnabled) {
				hints := []string{"--target DIR for files"}
				for _, s := range sources {
					_, r := s.Hints()
					hints = append(hints, r)
				}
				return errors.New("give a destination: " + strings.Join(hints, ", "))
			}
			inc, err := pathmatch.ParseList(includes)
			if err != nil {
				return err
			}
			exc, err := pathmatch.ParseList(excludes)
			if err != nil {
				return err
			}
			if target != "" {
				// Before anything is read or written (a database restored
				// before the files fail is half a deployment).
				if err := restorer.CheckWritable(target); err != nil {
					return fmt.Errorf("restore target: %w", err)
				}
			}
			r, err := a.openRepo(ctx, true, backend.Snapshot)
			if err != nil {
				return err
			}
			defer r.Close()
			sn, err := a.restoreSnapshot(ctx, r, args, atTime, host, tags)
			if err != nil {
				return err
			}
			if err := a.restoreSources(ctx, r, sn, sources); err != nil {
				return err
			}
			if target == "" {
				return nil
			}
			return a.restoreFiles(ctx, r, sn, restorer.Options{Target: target, Includes: inc, Excludes: exc, Delete: deleteExtra})
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&target, "target", "t", "", "restore into `directory`")
	fl.StringArrayVarP(&includes, "include", "i", nil, "restore only paths matching `pattern` (repeatable)")
	fl.StringArrayVarP(&excludes, "exclude", "e", nil, "do not restore paths matching `pattern` (repeatable)")
	fl.StringVar(&host, "host", "", "with 'latest' or --at: only snapshots of this `host`")
	fl.StringVar(&at, "at", "", "restore the newest snapshot taken at or before `time` (RFC 3339, or local 2026-01-06 03:00[:00] or 2026-01-06 for 00:00)")
	fl.StringArrayVar(&tags, "tag", nil, "with 'latest' or --at: only snapshots with all of these `tags`")
	fl.StringVar(&config, "config", "", "restore every source of the deployment profile `file` to the targets it names (SNAPSHOT defaults to the newest of the profile)")
	fl.BoolVarP(&dryRun, "dry-run", "n", false, "with --config: print the plan and stop")
	fl.BoolVar(&deleteExtra, "delete", false, "remove files and directories in the target that the snapshot does not have (in the directories restored, as the filters select), so that the target equals the snapshot")
	fl.BoolVar(&inPlace, "in-place", false, "with --config: allow the plan to replace live data (the backed-up database, Redis or paths)")
	for _, s := range sources {
		s.RestoreFlags(fl)
	}
	pitr.register(fl)
	return cmd
}

// restoreSources checks every enabled source's target, then restores
// them; a failure names the sources restored before it.
func (a *app) restoreSources(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, sources []source.Source) error {
	for _, s := range sources {
		if !s.RestoreEnabled() {
			continue
		}
		if _, err := s.CheckRestore(ctx, a.sourceRestore(r, sn)); err != nil {
			return fmt.Errorf("%s restore cannot run, nothing was restored: %w", s.Name(), err)
		}
	}
	var restored []string
	for _, s := range sources {
		if err := s.Restore(ctx, a.sourceRestore(r, sn)); err != nil {
			if len(restored) > 0 {
				return fmt.Errorf("%w; restored before the failure: %s; the files were not restored", err, strings.Join(restored, ", "))
			}
			return err
		}
		if s.RestoreEnabled() {
			restored = append(restored, s.Name())
		}
	}
	return nil
}

// restoreFiles restores the snapshot's files below opts.Target and reports
// what was written (and what was not).
func (a *app) restoreFiles(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, opts restorer.Options) error {
	target, deleteExtra := opts.Target, opts.Delete
	if ents, err := os.ReadDir(target); err == nil && len(ents) > 0 && !deleteExtra {
		fmt.Fprintf(a.stderr, "warning: %s is not empty: what the snapshot does not have stays there (--delete removes it)\n", target)
	}
	start := time.Now()
	var written atomic.Int64
	a.printf("restoring snapshot %s of %s at %s to %s\n", sn.ID.Short(), strings.Join(sn.Paths, ", "), sn.Time.Local().Format("2006-01-02 15:04:05"), target)
	stopLog := a.logEvery("restore", func() string { return formatBytes(uint64(written.Load())) + " written" })
	opts.Chown, opts.BytesWritten, opts.Downloads, opts.MaxEntries = os.Geteuid() == 0, &written, a.downloadsFor(r), a.maxEntries
	opts.Warn = func(p string, err error) { fmt.Fprintf(a.stderr, "error: %s: %v\n", p, unwrapPath(err)) }
	st, err := restorer.Restore(ctx, r, sn.Tree, opts)
	stopLog()
	if err != nil {
		return fmt.Errorf("restore failed: %w", err)
	}
	d := time.Since(start)
	if a.jsonOutput {
		if err := a.printJSON(newRestoreJSON(sn.ID, st, d.Seconds())); err != nil {
			return err
		}
	} else if st.Warnings == 0 {
		a.printf("restored %d files, %d directories, %d links, %s in %s\n", st.Files, st.Dirs, st.Links, formatBytes(st.Bytes), d.Round(time.Millisecond))
		if deleteExtra {
			a.printf("deleted %d entries the snapshot does not have\n", st.Deleted)
		}
	}
	for _, p := range st.Partial {
		fmt.Fprintf(a.stderr, "incomplete, left as %s\n", p)
	}
	if st.Warnings > 0 {
		return fmt.Errorf("restore incomplete: %d error(s); %d files restored, %d not (%s written) in %s",
			st.Warnings, st.Files, st.FilesFailed, formatBytes(st.Bytes), d.Round(time.Millisecond))
	}
	return nil
}
