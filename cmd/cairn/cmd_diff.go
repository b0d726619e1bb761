package main

import (
	"cmp"
	"context"
	"fmt"
	"path"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/tree"
)

func (a *app) diffCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "diff SNAPSHOT1 SNAPSHOT2",
		Short: "Show what changed between two snapshots",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx, true, backend.Snapshot)
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
				return a.printJSON(diffJSON{MessageType: "statistics", SourceSnapshot: s1.ID.String(), TargetSnapshot: s2.ID.String(),
					Added: st.added, Removed: st.removed, Changed: st.changed, AddedBytes: st.addedBytes, RemovedBytes: st.removedBytes})
			}
			fmt.Fprintf(a.stdout, "\nFiles: %d added, %d removed, %d changed; data %s added, %s removed\n", st.added, st.removed, st.changed, formatBytes(st.addedBytes), formatBytes(st.removedBytes))
			return nil
		},
	}
}

type diffStats struct {
	added, removed, changed  int
	addedBytes, removedBytes uint64
	visited                  int // entries compared, against --max-entries
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
		if st.visited++; st.visited > cmp.Or(a.maxEntries, tree.DefaultMaxEntries) {
			return &tree.TooManyEntriesError{Max: cmp.Or(a.maxEntries, tree.DefaultMaxEntries)}
		}
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
