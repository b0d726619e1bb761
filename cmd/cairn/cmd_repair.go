package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/repair"
)

func (a *app) repairCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "repair", Short: "Repair the index or snapshots after data loss"}
	logf := func(format string, args ...any) {
		if !a.quiet {
			fmt.Fprintf(a.stderr, format+"\n", args...)
		}
	}
	idx := &cobra.Command{
		Use: "index", Short: "Rebuild the index from the pack headers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			st, err := repair.Index(ctx, r, logf)
			if err != nil {
				return err
			}
			if a.jsonOutput {
				return a.printJSON(newRepairIndexJSON(st))
			}
			a.printf("indexed %d blobs in %d packs; replaced %d index files with %d\n", st.Blobs, st.Packs, st.OldIndexFiles, st.NewIndexFiles)
			if len(st.BadPacks) > 0 {
				a.printf("%d packs could not be read; run 'cairn repair snapshots' to mark the lost data\n", len(st.BadPacks))
			}
			return nil
		},
	}
	var dryRun, forget bool
	snaps := &cobra.Command{
		Use: "snapshots", Short: "Rewrite snapshots that refer to lost data, marking what is lost", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			st, err := repair.Snapshots(ctx, r, repair.SnapshotOptions{DryRun: dryRun, Forget: forget, Log: logf})
			if err != nil {
				return err
			}
			if a.jsonOutput {
				return a.printJSON(newRepairSnapshotsJSON(st, dryRun))
			}
			verb := "repaired"
			if dryRun {
				verb = "would repair"
			}
			a.printf("checked %d snapshots, %s %d (%d files and %d directories lost, renamed to *%s)\n", st.Checked, verb, st.Repaired,
				len(st.DamagedFiles), len(st.DamagedDirs), repair.DamagedSuffix)
			if st.Repaired > 0 && !forget && !dryRun {
				a.printf("the damaged originals are kept; remove them with 'cairn forget ID' or rerun with --forget\n")
			}
			return nil
		},
	}
	snaps.Flags().BoolVarP(&dryRun, "dry-run", "n", false, "only show what would be repaired")
	snaps.Flags().BoolVar(&forget, "forget", false, "remove each damaged snapshot once its repaired copy is saved")
	cmd.AddCommand(idx, snaps)
	return cmd
}
