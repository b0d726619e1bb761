package restorer

import (
	"context"
	"fmt"
	"io"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// Dump writes the content of a stored file (a database dump, say) to w in
// order. Its packs, and the packs of its delta bases, are read a window at
// a time with several windows in flight (repo.ReadBlobs), so a stream on a
// remote repository costs about one request per pack, not per blob.
func Dump(ctx context.Context, r *repo.Repository, n *tree.Node, w io.Writer, downloads int) error {
	if n.Type != tree.File {
		return fmt.Errorf("%s is a %s, not a file", n.Name, n.Type)
	}
	return r.ReadBlobs(ctx, n.Content, repo.ReadOptions{Ordered: true, Downloads: downloads}, func(i int, plain []byte, err error) error {
		if err != nil {
			return err
		}
		if _, err := w.Write(plain); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	})
}
