package tree

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"

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

// Preload loads the trees below root (root included), workers at a time,
// for a walk that will visit most of them and can then take them from the
// returned map instead of loading each in turn. descend, when set, says
// whether the subtree of directory node n in dir (a slash path) is wanted.
// A tree that cannot be loaded is left out, and the walk meets the error
// when it loads that tree itself.
func Preload(ctx context.Context, l BlobLoader, root crypto.ID, workers int, descend func(dir string, n *Node) bool) map[crypto.ID]*Tree {
	type job struct {
		id  crypto.ID
		dir string
	}
	var (
		mu      sync.Mutex
		out     = map[crypto.ID]*Tree{}
		seen    = map[crypto.ID]bool{root: true}
		queue   = []job{{root, "/"}}
		pending = 0 // jobs taken but not finished
		cond    = sync.NewCond(&mu)
	)
	worker := func() {
		mu.Lock()
		defer mu.Unlock()
		for {
			for len(queue) == 0 && pending > 0 && ctx.Err() == nil {
				cond.Wait()
			}
			if len(queue) == 0 || ctx.Err() != nil {
				cond.Broadcast()
				return
			}
			j := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			pending++
			mu.Unlock()
			t, err := Load(ctx, l, j.id)
			mu.Lock()
			pending--
			if err == nil {
				out[j.id] = t
				for i := range t.Nodes {
					n := &t.Nodes[i]
					if n.Type != Dir || seen[n.Subtree] || descend != nil && !descend(j.dir, n) {
						continue
					}
					seen[n.Subtree] = true
					queue = append(queue, job{n.Subtree, path.Join(j.dir, n.Name)})
				}
			}
			cond.Broadcast()
		}
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(worker)
	}
	wg.Wait()
	return out
}

// ErrNotFound is wrapped by Find when a path is not in the tree.
var ErrNotFound = errors.New("not found in snapshot")

// Find resolves a slash path below the tree root. "/" returns a directory
// node standing for the root itself.
func Find(ctx context.Context, l BlobLoader, root crypto.ID, p string) (*Node, error) {
	p = path.Clean("/" + p)
	node := &Node{Name: "/", Type: Dir, Subtree: root}
	if p == "/" {
		return node, nil
	}
	for _, name := range strings.Split(p[1:], "/") {
		if node.Type != Dir {
			return nil, fmt.Errorf("%s: %w (%s is not a directory)", p, ErrNotFound, node.Name)
		}
		t, err := Load(ctx, l, node.Subtree)
		if err != nil {
			return nil, err
		}
		if node = t.Find(name); node == nil {
			return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
		}
	}
	return node, nil
}

// SkipDir, returned by a Walk callback for a directory, skips its contents.
var SkipDir = errors.New("skip this directory")

// DefaultMaxEntries bounds the entries a walk visits (Walk) or a restore
// plans, unless the caller chooses another bound. Trees are content
// addressed, so a snapshot's directories can name one subtree many times
// over; such a tree (only a hostile or broken writer makes one) unfolds
// into a number of entries exponential in its depth, and without a bound
// a listing or a restore of it would run until memory or patience ran out.
// Twenty million entries is above the file trees cairn is made for; a
// restore plans about 300 bytes per entry.
const DefaultMaxEntries = 20_000_000

// TooManyEntriesError is returned by a walk that met more entries than
// its bound.
type TooManyEntriesError struct{ Max int }

func (e *TooManyEntriesError) Error() string {
	return fmt.Sprintf("the snapshot has more than %d entries (its directories may repeat one another); raise the bound with --max-entries if it is real", e.Max)
}

// Walk calls fn for every node below the tree id, depth first in name
// order, with its slash path (dir joined with the node's name). It fails
// with a *TooManyEntriesError after DefaultMaxEntries nodes.
func Walk(ctx context.Context, l BlobLoader, id crypto.ID, dir string, fn func(p string, n *Node) error) error {
	return WalkMax(ctx, l, id, dir, 0, fn)
}

// WalkMax is Walk with a bound of max nodes (0: DefaultMaxEntries).
func WalkMax(ctx context.Context, l BlobLoader, id crypto.ID, dir string, max int, fn func(p string, n *Node) error) error {
	if max <= 0 {
		max = DefaultMaxEntries
	}
	left := max
	return walk(ctx, l, id, dir, &left, max, fn)
}

func walk(ctx context.Context, l BlobLoader, id crypto.ID, dir string, left *int, max int, fn func(p string, n *Node) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := Load(ctx, l, id)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		if *left == 0 {
			return &TooManyEntriesError{Max: max}
		}
		*left--
		n := &t.Nodes[i]
		p := path.Join(dir, n.Name)
		switch err := fn(p, n); {
		case errors.Is(err, SkipDir):
			continue
		case err != nil:
			return err
		}
		if n.Type == Dir {
			if err := walk(ctx, l, n.Subtree, p, left, max, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
