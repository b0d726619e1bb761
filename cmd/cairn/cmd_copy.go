package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/copier"
	"github.com/cairn-backup/cairn/internal/retention"
	"github.com/cairn-backup/cairn/repo"
)

func (a *app) copyCommand() *cobra.Command {
	var from fromFlags
	var hosts, tags, paths []string
	var withWAL bool
	cmd := &cobra.Command{
		Use:   "copy --from-repo SRC [SNAPSHOT...]",
		Short: "Copy snapshots from another repository (made with init --from-repo) into this one",
		Long: `Copy the snapshots of the repository --from-repo names that this one does not
have yet (all of them, or those named, narrowed by --host, --tag, --path),
with every blob they need that this repository lacks: read pack by pack,
moved sealed (re-encrypted with this repository's key, never decompressed),
then the index, then the snapshot, which records its original's ID. The
destination must have been made with 'cairn init --from-repo' from the
source (or the other way round), so that both name blobs alike.
Interrupted, it leaves no snapshot behind and the next run goes on.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			src, err := a.openFrom(ctx, from, true)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, err := a.openRepo(ctx, true)
			if err != nil {
				return err
			}
			defer dst.Close()
			all, err := src.ListSnapshots(ctx)
			if err != nil {
				return fmt.Errorf("source repository: %w", err)
			}
			var sns []*repo.Snapshot
			if len(args) > 0 {
				for _, ref := range args {
					sn, err := repo.SelectSnapshot(all, ref, "")
					if err != nil {
						return fmt.Errorf("source repository: %w", err)
					}
					if !slices.Contains(sns, sn) {
						sns = append(sns, sn)
					}
				}
				slices.SortStableFunc(sns, func(x, y *repo.Snapshot) int { return x.Time.Compare(y.Time) })
			} else {
				sns = all
			}
			sns = slices.DeleteFunc(sns, func(sn *repo.Snapshot) bool {
				return len(hosts) > 0 && !slices.Contains(hosts, sn.Hostname) || !retention.MatchTags(sn.Tags, tags) ||
					len(paths) > 0 && !slices.ContainsFunc(sn.Paths, func(p string) bool { return slices.Contains(paths, p) })
			})
			start := time.Now()
			res, err := copier.Copy(ctx, dst, src, sns, copier.Options{Downloads: a.downloadsFor(src),
				Copied: func(c copier.Copied) { a.reportCopied("", c) }})
			if err != nil {
				return err
			}
			sum := copySummaryJSON{MessageType: "copy_summary", Copied: len(res.Copied), Present: len(res.Present)}
			for _, c := range res.Copied {
				sum.Blobs += c.Blobs
				sum.Stored += c.Stored
			}
			if withWAL {
				w, err := copier.CopyWAL(ctx, dst, src, copier.Options{Downloads: a.downloadsFor(src)})
				if err != nil {
					return fmt.Errorf("copy archived WAL: %w", err)
				}
				sum.WALCopied, sum.WALPresent = w.Files, w.Present
				sum.Blobs += w.Blobs
				sum.Stored += w.Stored
				a.printf("%d archived WAL files copied, %d already here\n", w.Files, w.Present)
			}
			sum.TotalDuration = time.Since(start).Seconds()
			if a.jsonOutput {
				return a.printJSON(sum)
			}
			a.printf("%d snapshots copied (%d blobs, %s stored), %d already here, in %s\n", sum.Copied, sum.Blobs,
				formatBytes(uint64(sum.Stored)), sum.Present, time.Since(start).Round(10*time.Millisecond))
			return nil
		},
	}
	from.register(cmd)
	fl := cmd.Flags()
	fl.StringArrayVar(&hosts, "host", nil, "only snapshots of `host` (repeatable)")
	fl.StringArrayVar(&tags, "tag", nil, "only snapshots with the `tags` (comma-separated: all of them; repeated: any)")
	fl.StringArrayVar(&paths, "path", nil, "only snapshots that include `path` (repeatable)")
	fl.BoolVar(&withWAL, "wal", false, "also copy the PostgreSQL WAL archived in the source (wal-push) that this repository lacks, for point-in-time recovery from the copy")
	return cmd
}
