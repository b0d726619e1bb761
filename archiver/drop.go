package archiver

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// DropPaths returns a copy of the tree root without the given snapshot
// paths (and without directories that become empty because of it). Used
// to leave a failed optional source out of a snapshot.
func DropPaths(ctx context.Context, r *repo.Repository, root crypto.ID, paths []string) (crypto.ID, error) {
	drop := map[string]bool{}
	for _, p := range paths {
		drop[path.Clean("/"+p)] = true
	}
	id, _, err := dropIn(ctx, r, root, "/", drop)
	return id, err
}

// dropIn rewrites the tree at dir; empty reports that nothing is left.
func dropIn(ctx context.Context, r *repo.Repository, id crypto.ID, dir string, drop map[string]bool) (crypto.ID, bool, error) {
	t, err := tree.Load(ctx, r, id)
	if err != nil {
		return id, false, fmt.Errorf("tree of %s: %w", dir, err)
	}
	out := &tree.Tree{}
	changed := false
	for _, n := range t.Nodes {
		p := path.Join(dir, n.Name)
		if drop[p] {
			changed = true
			continue
		}
		if n.Type == tree.Dir && hasPrefixIn(p, drop) {
			sub, empty, err := dropIn(ctx, r, n.Subtree, p, drop)
			if err != nil {
				return id, false, err
			}
			if empty {
				changed = true
				continue
			}
			if sub != n.Subtree {
				n.Subtree = sub
				changed = true
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	if !changed {
		return id, false, nil
	}
	enc, err := out.Encode()
	if err != nil {
		return id, false, err
	}
	res, err := r.SaveBlob(ctx, index.TreeBlob, enc)
	if err != nil {
		return id, false, err
	}
	return res.ID, len(out.Nodes) == 0 && dir != "/", nil
}

func hasPrefixIn(dir string, drop map[string]bool) bool {
	for p := range drop {
		if strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	return false
}
