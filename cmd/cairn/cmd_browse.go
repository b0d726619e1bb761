package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
	"github.com/cairn-backup/cairn/tree"
)

func (a *app) moreCommands() []*cobra.Command {
	return []*cobra.Command{
		a.backupCommand(), a.restoreCommand(), a.snapshotsCommand(), a.lsCommand(),
		a.dumpCommand(), a.diffCommand(), a.statsCommand(), a.pruneCommand(), a.repairCommand(),
		a.forgetCommand(),
	}
}

func (a *app) restoreCommand() *cobra.Command {
	var target, host, at, config string
	var dryRun, inPlace bool
	var includes, excludes, tags []string
	sources := newSources()
	cmd := &cobra.Command{
		Use:   "restore (SNAPSHOT | --at TIME) (--target DIR | --pg-target URL | --redis-target URL | --redis-rdb-dir DIR)",
		Short: "Restore a snapshot (ID, unique prefix, 'latest' or --at TIME) into a directory, a database or Redis",
		Args:  cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
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
			r, err := a.openRepo(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			sn, err := a.restoreSnapshot(ctx, r, args, atTime, host, tags)
			if err != nil {
				return err
			}
			for _, s := range sources {
				if err := s.Restore(ctx, a.sourceRestore(r, sn)); err != nil {
					return err
				}
			}
			if target == "" {
				return nil
			}
			start := time.Now()
			var written atomic.Int64
			a.printf("restoring snapshot %s of %s at %s to %s\n", sn.ID.Short(), strings.Join(sn.Paths, ", "), sn.Time.Local().Format("2006-01-02 15:04:05"), target)
			st, err := restorer.Restore(ctx, r, sn.Tree, restorer.Options{
				Target: target, Includes: inc, Excludes: exc, Chown: os.Geteuid() == 0,
				BytesWritten: &written, Downloads: a.downloadsFor(r),
				Warn: func(p string, err error) {
					fmt.Fprintf(a.stderr, "error: %s: %v\n", p, unwrapPath(err))
				},
			})
			if err != nil {
				return fmt.Errorf("restore failed: %w", err)
			}
			d := time.Since(start)
			if a.jsonOutput {
				if err := a.printJSON(map[string]any{
					"message_type": "summary", "snapshot_id": sn.ID.String(), "files_restored": st.Files,
					"dirs_restored": st.Dirs, "links_restored": st.Links, "bytes_restored": st.Bytes,
					"errors": st.Warnings, "total_duration": d.Seconds(),
				}); err != nil {
					return err
				}
			} else {
				a.printf("restored %d files, %d directories, %d links, %s in %s\n", st.Files, st.Dirs, st.Links, formatBytes(st.Bytes), d.Round(time.Millisecond))
			}
			if st.Warnings > 0 {
				return fmt.Errorf("restore finished with %d error(s)", st.Warnings)
			}
			return nil
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
	fl.BoolVar(&inPlace, "in-place", false, "with --config: allow the plan to replace live data (the backed-up database, Redis or paths)")
	for _, s := range sources {
		s.RestoreFlags(fl)
	}
	return cmd
}

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
			r, err := a.openRepo(ctx, false)
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

type nodeJSON struct {
	Path       string    `json:"path"`
	Name       string    `json:"name"`
	Type       string    `json:"type"`
	Size       uint64    `json:"size"`
	Mode       string    `json:"mode"`
	UID        uint32    `json:"uid"`
	GID        uint32    `json:"gid"`
	User       string    `json:"user,omitempty"`
	Group      string    `json:"group,omitempty"`
	ModTime    time.Time `json:"mtime"`
	LinkTarget string    `json:"link_target,omitempty"`
}

func modeString(n *tree.Node) string {
	m := fs.FileMode(n.Mode & 0o777)
	if n.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch n.Type {
	case tree.Dir:
		m |= fs.ModeDir
	case tree.Symlink:
		m |= fs.ModeSymlink
	case tree.Dev:
		m |= fs.ModeDevice
	case tree.CharDev:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case tree.FIFO:
		m |= fs.ModeNamedPipe
	case tree.Socket:
		m |= fs.ModeSocket
	}
	return m.String()
}

func (a *app) lsCommand() *cobra.Command {
	var long bool
	cmd := &cobra.Command{
		Use:   "ls SNAPSHOT [PATH]",
		Short: "List the files of a snapshot",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			sn, err := findSnapshot(ctx, r, args[0], "")
			if err != nil {
				return err
			}
			dir := "/"
			if len(args) == 2 {
				dir = path.Clean("/" + args[1])
			}
			node, err := tree.Find(ctx, r, sn.Tree, dir)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(a.stdout)
			print := func(p string, n *tree.Node) error {
				if a.jsonOutput {
					return enc.Encode(nodeJSON{Path: p, Name: n.Name, Type: n.Type.String(), Size: n.Size, Mode: modeString(n),
						UID: n.UID, GID: n.GID, User: n.User, Group: n.Group, ModTime: time.Unix(0, n.ModTime), LinkTarget: n.LinkTarget})
				}
				if long {
					extra := ""
					if n.Type == tree.Symlink {
						extra = " -> " + n.LinkTarget
					}
					_, err := fmt.Fprintf(a.stdout, "%s %8s %8s %12d %s %s%s\n", modeString(n), nameOr(n.User, n.UID), nameOr(n.Group, n.GID), n.Size,
						time.Unix(0, n.ModTime).Local().Format("2006-01-02 15:04:05"), p, extra)
					return err
				}
				_, err := fmt.Fprintln(a.stdout, p)
				return err
			}
			if node.Type != tree.Dir {
				return print(dir, node)
			}
			return tree.Walk(ctx, r, node.Subtree, dir, print)
		},
	}
	cmd.Flags().BoolVarP(&long, "long", "l", false, "long listing: mode, owner, size, time")
	return cmd
}

func nameOr(name string, id uint32) string {
	if name != "" {
		return name
	}
	return fmt.Sprint(id)
}

func (a *app) dumpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dump SNAPSHOT PATH",
		Short: "Write a stored file or stream to standard output",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			sn, err := findSnapshot(ctx, r, args[0], "")
			if err != nil {
				return err
			}
			node, err := tree.Find(ctx, r, sn.Tree, args[1])
			if err != nil {
				return err
			}
			if node.Type != tree.File {
				return fmt.Errorf("%s is a %s, not a file: use 'cairn restore --include' for directories", args[1], node.Type)
			}
			return a.dumpFile(ctx, r, node, a.stdout)
		},
	}
}

// dumpFile writes a stored file's content to w (restorer.Dump).
func (a *app) dumpFile(ctx context.Context, r *repo.Repository, n *tree.Node, w io.Writer) error {
	return restorer.Dump(ctx, r, n, w, a.downloadsFor(r))
}

func (a *app) diffCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "diff SNAPSHOT1 SNAPSHOT2",
		Short: "Show what changed between two snapshots",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, true)
			if err != nil {
				return err
			}
			defer r.Close()
			s1, err := findSnapshot(ctx, r, args[0], "")
			if err != nil {
				return err
			}
			s2, err := findSnapshot(ctx, r, args[1], "")
			if err != nil {
				return err
			}
			var st diffStats
			if err := a.diffTrees(ctx, r, s1.Tree, s2.Tree, "/", &st); err != nil {
				return err
			}
			if a.jsonOutput {
				return a.printJSON(map[string]any{"message_type": "statistics", "source_snapshot": s1.ID.String(), "target_snapshot": s2.ID.String(),
					"added": st.added, "removed": st.removed, "changed": st.changed, "added_bytes": st.addedBytes, "removed_bytes": st.removedBytes})
			}
			fmt.Fprintf(a.stdout, "\nFiles: %d added, %d removed, %d changed; data %s added, %s removed\n", st.added, st.removed, st.changed, formatBytes(st.addedBytes), formatBytes(st.removedBytes))
			return nil
		},
	}
}

type diffStats struct {
	added, removed, changed  int
	addedBytes, removedBytes uint64
}

func (a *app) diffTrees(ctx context.Context, r *repo.Repository, id1, id2 crypto.ID, dir string, st *diffStats) error {
	if id1 == id2 {
		return nil
	}
	var t1, t2 *tree.Tree
	var err error
	if !id1.IsNull() {
		if t1, err = tree.Load(ctx, r, id1); err != nil {
			return err
		}
	} else {
		t1 = &tree.Tree{}
	}
	if !id2.IsNull() {
		if t2, err = tree.Load(ctx, r, id2); err != nil {
			return err
		}
	} else {
		t2 = &tree.Tree{}
	}
	report := func(mark, p string, n *tree.Node) {
		if a.jsonOutput {
			return
		}
		if n.Type == tree.Dir {
			p += "/"
		}
		fmt.Fprintf(a.stdout, "%s    %s\n", mark, p)
	}
	i, j := 0, 0
	for i < len(t1.Nodes) || j < len(t2.Nodes) {
		var n1, n2 *tree.Node
		switch {
		case j >= len(t2.Nodes) || (i < len(t1.Nodes) && t1.Nodes[i].Name < t2.Nodes[j].Name):
			n1 = &t1.Nodes[i]
			i++
		case i >= len(t1.Nodes) || t2.Nodes[j].Name < t1.Nodes[i].Name:
			n2 = &t2.Nodes[j]
			j++
		default:
			n1, n2 = &t1.Nodes[i], &t2.Nodes[j]
			i++
			j++
		}
		switch {
		case n2 == nil:
			p := path.Join(dir, n1.Name)
			report("-", p, n1)
			st.removed++
			st.removedBytes += n1.Size
			if n1.Type == tree.Dir {
				if err := a.diffTrees(ctx, r, n1.Subtree, crypto.ID{}, p, st); err != nil {
					return err
				}
			}
		case n1 == nil:
			p := path.Join(dir, n2.Name)
			report("+", p, n2)
			st.added++
			st.addedBytes += n2.Size
			if n2.Type == tree.Dir {
				if err := a.diffTrees(ctx, r, crypto.ID{}, n2.Subtree, p, st); err != nil {
					return err
				}
			}
		default:
			p := path.Join(dir, n1.Name)
			switch {
			case n1.Type != n2.Type:
				report("T", p, n2)
				st.changed++
			case n1.Type == tree.Dir:
				if err := a.diffTrees(ctx, r, n1.Subtree, n2.Subtree, p, st); err != nil {
					return err
				}
			case !sameContent(n1, n2):
				report("M", p, n2)
				st.changed++
				st.addedBytes += n2.Size
				st.removedBytes += n1.Size
			case n1.Mode != n2.Mode || n1.UID != n2.UID || n1.GID != n2.GID || n1.ModTime != n2.ModTime || n1.LinkTarget != n2.LinkTarget:
				report("U", p, n2)
			}
		}
	}
	return nil
}

func sameContent(a, b *tree.Node) bool {
	if len(a.Content) != len(b.Content) || a.Size != b.Size {
		return false
	}
	for i := range a.Content {
		if a.Content[i] != b.Content[i] {
			return false
		}
	}
	return true
}

func (a *app) statsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats [SNAPSHOT...]",
		Short: "Show restore size of snapshots and what the repository stores",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, true)
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
				if err := tree.Walk(ctx, r, sn.Tree, "/", func(_ string, n *tree.Node) error {
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
				return a.printJSON(map[string]any{
					"snapshots_count": len(sns), "total_file_count": files, "total_size": restoreSize,
					"total_blob_count": blobs, "data_blob_count": dataBlobs, "tree_blob_count": blobs - dataBlobs,
					"total_stored_blob_size": storedBlobBytes, "pack_count": packs, "total_pack_size": packBytes,
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
