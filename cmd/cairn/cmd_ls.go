package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/restorer"
	"github.com/cairn-backup/cairn/tree"
)

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
			r, err := a.openRepo(ctx, true, backend.Snapshot)
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
			return tree.WalkMax(ctx, r, node.Subtree, dir, a.maxEntries, print)
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
			r, err := a.openRepo(ctx, true, backend.Snapshot)
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
