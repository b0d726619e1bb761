package tree

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/crypto"
)

// BlobLoader loads the plaintext of a blob (a repository does).
type BlobLoader interface {
	LoadBlob(ctx context.Context, id crypto.ID, dst []byte) ([]byte, error)
}

// Prefetcher is a BlobLoader that can start fetching blobs in the
// background: the packs of trees about to be read are then on their way
// before the walk reaches them.
type Prefetcher interface {
	PrefetchBlobs(ctx context.Context, ids []crypto.ID)
}

// Load reads and decodes the tree id. When l is a Prefetcher, the subtrees
// of the tree are prefetched, so a walk over a remote repository waits on
// about one round trip per tree pack, not one per directory.
func Load(ctx context.Context, l BlobLoader, id crypto.ID) (*Tree, error) {
	raw, err := l.LoadBlob(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Short(), err)
	}
	t, err := Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), err)
	}
	if p, ok := l.(Prefetcher); ok {
		var subtrees []crypto.ID
		for i := range t.Nodes {
			if t.Nodes[i].Type == Dir && !t.Nodes[i].Subtree.IsNull() {
				subtrees = append(subtrees, t.Nodes[i].Subtree)
			}
		}
		p.PrefetchBlobs(ctx, subtrees)
	}
	return t, nil
}
