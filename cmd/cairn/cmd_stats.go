package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/tree"
)

func (a *app) statsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats [SNAPSHOT...]",
		Short: "Show restore size of snapshots and what the repository stores",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, true, backend.Snapshot)
			if err != nil {
				return err
			}
			defer r.Close()
			var sns []*repo.Snapshot
			if len(args) == 0 {
				sns, err = r.ListSnapshots(ctx)
				if err != nil {
					return err
				}
			}
			for _, ref := range args {
				sn, err := findSnapshot(ctx, r, ref, "")
				if err != nil {
					return err
				}
				sns = append(sns, sn)
			}
			var files, restoreSize uint64
			for _, sn := range sns {
				if err := tree.WalkMax(ctx, r, sn.Tree, "/", a.maxEntries, func(_ string, n *tree.Node) error {
					if n.Type == tree.File {
						files++
						restoreSize += n.Size
					}
					return nil
				}); err != nil {
					return err
				}
			}
			var blobs, dataBlobs uint64
			var storedBlobBytes uint64
			if err := r.Index().Each(func(_ crypto.ID, l index.Location) error {
				blobs++
				if l.Type == index.DataBlob {
					dataBlobs++
				}
				storedBlobBytes += uint64(l.Length)
				return nil
			}); err != nil {
				return err
			}
			var packs, packBytes uint64
			if err := r.ListPacks(ctx, func(p repo.StoredPack) error {
				packs++
				packBytes += uint64(p.Size)
				return nil
			}); err != nil {
				return err
			}
			if a.jsonOutput {
				return a.printJSON(statsJSON{
					SnapshotsCount: len(sns), TotalFileCount: files, TotalSize: restoreSize,
					TotalBlobCount: blobs, DataBlobCount: dataBlobs, TreeBlobCount: blobs - dataBlobs,
					TotalStoredBlobSize: storedBlobBytes, PackCount: packs, TotalPackSize: packBytes,
				})
			}
			fmt.Fprintf(a.stdout, "Snapshots:            %d\n", len(sns))
			fmt.Fprintf(a.stdout, "Files (all snapshots): %d\n", files)
			fmt.Fprintf(a.stdout, "Restore size:         %s\n", formatBytes(restoreSize))
			fmt.Fprintf(a.stdout, "Blobs:                %d (%d data, %d tree)\n", blobs, dataBlobs, blobs-dataBlobs)
			fmt.Fprintf(a.stdout, "Stored:               %s in %d packs (%s with headers)\n", formatBytes(storedBlobBytes), packs, formatBytes(packBytes))
			if storedBlobBytes > 0 {
				fmt.Fprintf(a.stdout, "Deduplication ratio:  %.2fx\n", float64(restoreSize)/float64(storedBlobBytes))
			}
			return nil
		},
	}
}
