package main

import (
	"github.com/cairn-backup/cairn/crypto"
	"github.com/spf13/cobra"
)

func (a *app) migrateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Upgrade the repository to the current format (version 2: files bound to their type)",
		Long: `Upgrade a version 1 repository to version 2 in place: index files and
snapshots are sealed again, bound to their type, so that one cannot be
passed off for another; data and tree packs are not touched. Snapshot IDs
change (each is the hash of the stored snapshot) and are printed old -> new.
Run it when no other cairn process uses the repository; stopped, it leaves
a repository that reads as before, and running it again finishes. On a
version 2 repository it binds files of the old format that a process which
opened the repository before the migration wrote.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			res, err := r.Migrate(ctx)
			if err != nil {
				return err
			}
			renamed := map[crypto.ID]crypto.ID{}
			for _, m := range res.Snapshots {
				renamed[m.Old] = m.New
			}
			a.forgetSeen(nil, renamed)
			if a.jsonOutput {
				return a.printJSON(newMigrateJSON(res))
			}
			for _, m := range res.Snapshots {
				a.printf("snapshot %s -> %s\n", m.Old.Short(), m.New.Short())
			}
			switch {
			case res.From != res.To:
				a.printf("repository format %d -> %d: %d index files written for %d, %d snapshots sealed again\n",
					res.From, res.To, res.IndexFilesOut, res.IndexFilesIn, len(res.Snapshots))
			case len(res.Snapshots) > 0:
				a.printf("repository format %d: %d snapshots of the old format bound\n", res.To, len(res.Snapshots))
			default:
				a.printf("repository format %d: nothing to do\n", res.To)
			}
			return nil
		},
	}
}
