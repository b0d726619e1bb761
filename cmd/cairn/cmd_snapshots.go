package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

type snapshotJSON struct {
	ID             string        `json:"id"`
	ShortID        string        `json:"short_id"`
	Time           time.Time     `json:"time"`
	Hostname       string        `json:"hostname"`
	Username       string        `json:"username,omitempty"`
	Tags           []string      `json:"tags"`
	Paths          []string      `json:"paths"`
	Tree           string        `json:"tree"`
	Parent         string        `json:"parent,omitempty"`
	Original       string        `json:"original,omitempty"`
	CopiedFrom     string        `json:"copied_from,omitempty"`
	ProgramVersion string        `json:"program_version"`
	Summary        *repo.Summary `json:"summary,omitempty"`
	Sources        []repo.Source `json:"sources,omitempty"`
}

func (a *app) snapshotsCommand() *cobra.Command {
	var host, at, config string
	var tags []string
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			atTime, err := parseAtFlag(at)
			if err != nil {
				return err
			}
			if config != "" {
				p, err := a.loadProfile(config)
				if err != nil {
					return err
				}
				tags = append(tags, p.Tag())
				if host == "" {
					host = p.Host
				}
			}
			r, err := a.openRepo(ctx, false, backend.Snapshot)
			if err != nil {
				return err
			}
			defer r.Close()
			sns, listErr := r.ListSnapshots(ctx)
			if listErr != nil && len(sns) == 0 {
				return listErr
			}
			want := splitTags(tags)
			var out []*repo.Snapshot
			for _, sn := range sns {
				if host != "" && sn.Hostname != host {
					continue
				}
				if !hasTags(sn.Tags, want) {
					continue
				}
				out = append(out, sn)
			}
			if at != "" {
				sn, err := snapshotAt(out, atTime)
				if err != nil {
					return err
				}
				out = []*repo.Snapshot{sn}
			}
			if a.jsonOutput {
				js := []snapshotJSON{}
				for _, sn := range out {
					js = append(js, toSnapshotJSON(sn))
				}
				if err := a.printJSON(js); err != nil {
					return err
				}
				return listErr
			}
			fmt.Fprintf(a.stdout, "%-9s %-19s %-16s %-16s %10s  %s\n", "ID", "Time", "Host", "Tags", "Size", "Paths")
			fmt.Fprintln(a.stdout, strings.Repeat("-", 90))
			for _, sn := range out {
				var size string
				if sn.Summary != nil {
					size = formatBytes(sn.Summary.TotalBytesProcessed)
				}
				fmt.Fprintf(a.stdout, "%-9s %-19s %-16s %-16s %10s  %s\n", sn.ID.Short(), sn.Time.Local().Format("2006-01-02 15:04:05"),
					sn.Hostname, strings.Join(sn.Tags, ","), size, strings.Join(sn.Paths, ", "))
				if sn.CopiedFrom != nil {
					fmt.Fprintf(a.stdout, "%-9s copy of snapshot %s of another repository\n", "", sn.CopiedFrom.Short())
				}
				if showSources(sn) {
					for _, src := range sn.Sources {
						status := src.Status
						if src.Error != "" {
							status += ": " + src.Error
						}
						fmt.Fprintf(a.stdout, "%-9s %-8s %-36s %10s  %s\n", "", src.Kind, src.Name, formatBytes(src.Size), status)
					}
				}
			}
			fmt.Fprintln(a.stdout, strings.Repeat("-", 90))
			fmt.Fprintf(a.stdout, "%d snapshots\n", len(out))
			return listErr
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only snapshots of `host`")
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "only snapshots with all of these `tags`")
	cmd.Flags().StringVar(&config, "config", "", "only snapshots of the deployment profile `file`")
	cmd.Flags().StringVar(&at, "at", "", "show only the newest snapshot taken at or before `time` (what restore --at picks)")
	return cmd
}

// showSources says whether a snapshot's sources add anything to its row:
// a database, a cache, a stream, or a source that is not ok.
func showSources(sn *repo.Snapshot) bool {
	for _, src := range sn.Sources {
		if src.Kind != "files" || src.Status != repo.SourceOK {
			return true
		}
	}
	return false
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// findSnapshot resolves "latest", a full ID or a unique ID prefix
// (repo.SelectSnapshot).
func findSnapshot(ctx context.Context, r *repo.Repository, ref string, host string) (*repo.Snapshot, error) {
	sns, err := r.ListSnapshots(ctx)
	if err != nil && len(sns) == 0 {
		return nil, err
	}
	return repo.SelectSnapshot(sns, ref, host)
}

func formatBytes(n uint64) string { return source.FormatBytes(n) }
