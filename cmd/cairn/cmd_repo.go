package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/checker"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/cache"
)

func (a *app) printJSON(v any) error {
	return a.printJSONTo(a.stdout, v)
}

// printJSONTo writes v as one line of JSON (JSON lines, as restic: tools
// read the output line by line).
func (a *app) printJSONTo(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	a.jsonMu.Lock()
	defer a.jsonMu.Unlock()
	_, err = w.Write(append(b, '\n'))
	return err
}

// out is where sources report (internal/source).
func (a *app) out() source.Out {
	return source.Out{Stdout: a.stdout, Stderr: a.stderr, JSON: a.jsonOutput, Quiet: a.quiet}
}

// sourceRestore is what a source needs to restore its part of sn.
func (a *app) sourceRestore(r *repo.Repository, sn *repo.Snapshot) source.Restore {
	return source.Restore{Repo: r, Snapshot: sn, Out: a.out(), Downloads: a.downloadsFor(r), MaxEntries: a.maxEntries}
}

// warnf writes a warning line to standard error, with or without --json.
func (a *app) warnf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "warning: "+format+"\n", args...)
}

func (a *app) printf(format string, args ...any) {
	// With --json, standard output carries JSON only.
	if !a.quiet && !a.jsonOutput {
		fmt.Fprintf(a.stdout, format, args...)
	}
}

func (a *app) initCommand() *cobra.Command {
	var packSizeMiB int
	var from fromFlags
	var lockMode string
	var lockDays float64
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new repository",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			be, err := a.openBackend()
			if err != nil {
				return err
			}
			opts := a.repoOptions(be)
			opts.PackSize = packSizeMiB << 20
			if opts.ObjectLock, err = objectLockOption(lockMode, lockDays); err != nil {
				return err
			}
			if from.repo != "" {
				// The source first: a wrong source password fails before
				// the new one is asked for.
				src, err := a.openFrom(ctx, from, false)
				if err != nil {
					return err
				}
				tpl := src.Template()
				src.Close()
				opts.From = &tpl
			}
			pw, err := a.password(ctx, "enter a password for the new repository: ", true)
			if err != nil {
				return err
			}
			if pw == "" {
				return errors.New("an empty password is not allowed")
			}
			r, err := repo.Init(ctx, be, pw, opts)
			if err != nil {
				return err
			}
			defer r.Close()
			cfg := r.Config()
			if a.jsonOutput {
				return a.printJSON(initJSON{MessageType: "initialized", ID: cfg.ID, Repository: be.Location()})
			}
			a.printf("created cairn repository %s at %s\n", cfg.ID[:10], be.Location())
			if from.repo != "" {
				a.printf("it cuts and names data as %s does (same chunking and blob IDs, keys of its own)\n", from.repo)
			}
			if l := cfg.ObjectLock; l != nil {
				a.printf("every object is locked (%s) for %v after it is written; run 'cairn lock extend' (or forget --prune) at least every %v\n",
					l.Mode, formatPeriod(l.Lock().Period), formatPeriod(l.Lock().Period/2))
			}
			a.printf("keep the password safe: without it the data cannot be recovered\n")
			return nil
		},
	}
	cmd.Flags().IntVar(&packSizeMiB, "pack-size", 16, "target pack size in `MiB` (1..32)")
	cmd.Flags().StringVar(&lockMode, "s3-object-lock", "", "lock every object with S3 Object Lock in `mode` governance or compliance (a bucket cairn creates gets locking)")
	cmd.Flags().Float64Var(&lockDays, "s3-lock-days", 0, "with --s3-object-lock: keep each object locked for `days` after it is written or last extended (fractions allowed)")
	from.register(cmd)
	return cmd
}

func (a *app) checkCommand() *cobra.Command {
	var readData, withCache bool
	var subset string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify the repository's structure, and with --read-data every stored byte",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			opts := checker.Options{ReadData: readData || subset != ""}
			if subset != "" {
				if _, err := fmt.Sscanf(subset, "%d/%d", &opts.SubsetN, &opts.SubsetM); err != nil || opts.SubsetM < 1 || opts.SubsetN < 1 || opts.SubsetN > opts.SubsetM {
					return fmt.Errorf("invalid --read-data-subset %q: want N/M with 1 <= N <= M", subset)
				}
			}
			// check verifies what the repository holds: metadata comes from
			// it, through a cache that lasts this run only.
			a.tempCache = !withCache
			r, err := a.openRepo(ctx, false)
			if err != nil {
				return err
			}
			defer r.Close()
			var packsRead atomic.Int64
			opts.PacksRead = &packsRead
			stopLog := a.logEvery("check", func() string { return fmt.Sprintf("%d packs read", packsRead.Load()) })
			res, err := checker.Check(ctx, r, opts)
			stopLog()
			if err != nil {
				return err
			}
			nerr := res.Errors()
			if a.jsonOutput {
				fs := []checkFindingJSON{}
				for _, f := range res.Findings {
					sev := "error"
					if f.Severity == checker.Note {
						sev = "note"
					}
					fs = append(fs, checkFindingJSON{sev, f.Object, f.Message})
				}
				if err := a.printJSON(checkJSON{
					MessageType: "check_summary", Errors: nerr, Findings: fs,
					Snapshots: res.Snapshots, IndexFiles: res.IndexFiles, Packs: res.Packs,
					PacksRead: res.PacksRead, BlobsChecked: res.BlobsChecked,
				}); err != nil {
					return err
				}
			} else {
				a.printf("checked %d snapshots, %d index files, %d packs", res.Snapshots, res.IndexFiles, res.Packs)
				if opts.ReadData {
					a.printf("; read %d packs, verified %d blobs", res.PacksRead, res.BlobsChecked)
				}
				a.printf("\n")
				for _, f := range res.Findings {
					if f.Severity == checker.Error {
						fmt.Fprintf(a.stdout, "error: %s\n", f)
					} else {
						a.printf("note: %s\n", f)
					}
				}
			}
			if nerr > 0 {
				return fmt.Errorf("check found %d problem(s)", nerr)
			}
			a.printf("no errors were found\n")
			return nil
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "read every pack and verify every blob")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", "read only part `N/M` of the packs (implies --read-data)")
	cmd.Flags().BoolVar(&withCache, "with-cache", false, "read index, snapshots and trees through the local cache (faster on S3; packs are still read from the repository)")
	return cmd
}

func (a *app) keyCommand() *cobra.Command {
	var newPasswordFile string
	newPassword := func(cmd *cobra.Command) (string, error) {
		// The new password's source: the same reader, another file.
		sub := &app{passwordFile: newPasswordFile}
		if newPasswordFile == "" {
			if pw, ok := os.LookupEnv("CAIRN_NEW_PASSWORD"); ok {
				return pw, nil
			}
			return promptPassword("enter the new password: ", true)
		}
		return sub.password(cmd.Context(), "", false)
	}
	cmd := &cobra.Command{Use: "key", Short: "Manage the repository's passwords (key files)"}
	list := &cobra.Command{
		Use: "list", Short: "List key files", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.openRepo(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer r.Close()
			keys, err := r.ListKeys(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOutput {
				type k struct {
					ID       string `json:"id"`
					Current  bool   `json:"current"`
					Username string `json:"username"`
					Hostname string `json:"hostname"`
					Created  string `json:"created"`
				}
				out := []k{}
				for _, x := range keys {
					out = append(out, k{x.ID, x.Current, x.Username, x.Hostname, x.Created})
				}
				return a.printJSON(out)
			}
			fmt.Fprintf(a.stdout, " %-10s %-12s %-20s %s\n", "ID", "User", "Host", "Created")
			for _, x := range keys {
				mark := " "
				if x.Current {
					mark = "*"
				}
				fmt.Fprintf(a.stdout, "%s%-10s %-12s %-20s %s\n", mark, x.ID[:8], x.Username, x.Hostname, x.Created)
			}
			return nil
		},
	}
	// withNewPassword opens the repository, reads a new non-empty password
	// and hands both to do, which returns the new key's ID.
	withNewPassword := func(done string, do func(*repo.Repository, context.Context, string) (string, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			r, err := a.openRepo(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer r.Close()
			pw, err := newPassword(cmd)
			if err != nil {
				return err
			}
			if pw == "" {
				return errors.New("an empty password is not allowed")
			}
			id, err := do(r, cmd.Context(), pw)
			if err != nil {
				return err
			}
			a.printf("%s %s\n", done, id[:8])
			return nil
		}
	}
	add := &cobra.Command{
		Use: "add", Short: "Add a password", Args: cobra.NoArgs,
		RunE: withNewPassword("added key", (*repo.Repository).AddKey),
	}
	remove := &cobra.Command{
		Use: "remove ID", Short: "Remove a password (not the last one, not the one in use)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := a.openRepo(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer r.Close()
			id, err := r.RemoveKey(cmd.Context(), strings.TrimSpace(args[0]))
			if err != nil {
				return err
			}
			if base := a.keyHintBase(); base != "" {
				cache.RemoveKeyCopy(base, id)
			}
			a.printf("removed key %s\n", id[:8])
			return nil
		},
	}
	passwd := &cobra.Command{
		Use: "passwd", Short: "Change the password in use", Args: cobra.NoArgs,
		RunE: withNewPassword("password changed; new key", (*repo.Repository).ChangePassword),
	}
	for _, c := range []*cobra.Command{add, passwd} {
		c.Flags().StringVar(&newPasswordFile, "new-password-file", "", "read the new password from `file` (or set CAIRN_NEW_PASSWORD)")
	}
	cmd.AddCommand(list, add, remove, passwd)
	return cmd
}
