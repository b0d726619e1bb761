package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/copier"
	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/repo"
)

// fromFlags name a second repository that a command reads from
// (init --from-repo), with its own password and S3 credentials.
type fromFlags struct {
	repo, passwordFile, passwordCommand string
}

func (f *fromFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.repo, "from-repo", os.Getenv("CAIRN_FROM_REPOSITORY"), "the other repository's `location`; env CAIRN_FROM_REPOSITORY (on S3, credentials from CAIRN_FROM_AWS_ACCESS_KEY_ID, CAIRN_FROM_AWS_SECRET_ACCESS_KEY, ... when set, else AWS_*)")
	fl.StringVar(&f.passwordFile, "from-password-file", os.Getenv("CAIRN_FROM_PASSWORD_FILE"), "read the other repository's password from `file`; env CAIRN_FROM_PASSWORD_FILE (else CAIRN_FROM_PASSWORD_COMMAND, CAIRN_FROM_PASSWORD or a prompt)")
	fl.StringVar(&f.passwordCommand, "from-password-command", os.Getenv("CAIRN_FROM_PASSWORD_COMMAND"), "run `command` for the other repository's password; env CAIRN_FROM_PASSWORD_COMMAND")
}

// otherRepo is a repository besides the one -r names: where it is, the S3
// credentials it takes before AWS_* (nil: none), and its password.
type otherRepo struct {
	loc                                        string
	creds                                      func(name string) (string, bool)
	passwordFile, passwordCommand, passwordEnv string
}

// openOther opens another repository, with its index when loadIndex.
func (a *app) openOther(ctx context.Context, o otherRepo, loadIndex bool) (*repo.Repository, error) {
	be, err := a.openBackendAt(o.loc, o.creds)
	if err != nil {
		return nil, err
	}
	cfgData, err := repo.ReadConfig(ctx, be)
	if err != nil {
		return nil, err
	}
	pw, err := readPassword(ctx, o.passwordFile, o.passwordCommand, o.passwordEnv, "enter the password of "+be.Location()+": ", false)
	if err != nil {
		return nil, err
	}
	r, err := repo.OpenConfig(ctx, be, cfgData, pw, a.repoOptions(be))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", be.Location(), err)
	}
	if loadIndex {
		if err := r.LoadIndex(ctx); err != nil {
			r.Close()
			return nil, fmt.Errorf("%s: load index: %w", be.Location(), err)
		}
	}
	return r, nil
}

// openFrom opens the repository --from-repo names.
func (a *app) openFrom(ctx context.Context, f fromFlags, loadIndex bool) (*repo.Repository, error) {
	if f.repo == "" {
		return nil, &exitCodeError{exitError, errors.New("no source repository: use --from-repo or set CAIRN_FROM_REPOSITORY")}
	}
	r, err := a.openOther(ctx, otherRepo{loc: f.repo, creds: envWithPrefix("CAIRN_FROM_"),
		passwordFile: f.passwordFile, passwordCommand: f.passwordCommand, passwordEnv: "CAIRN_FROM_PASSWORD"}, loadIndex)
	if err != nil {
		return nil, fmt.Errorf("source repository: %w", err)
	}
	return r, nil
}

// openOffsite opens an offsite repository of a profile, with its index,
// its password and its own credentials (env_file).
func (a *app) openOffsite(ctx context.Context, o profile.Offsite) (*repo.Repository, error) {
	env, err := profile.ReadEnvFile(o.EnvFile)
	if err != nil {
		return nil, err
	}
	return a.openOther(ctx, otherRepo{loc: o.Repository, creds: func(name string) (string, bool) { v, ok := env[name]; return v, ok },
		passwordFile: o.PasswordFile, passwordCommand: o.PasswordCommand}, true)
}

// reportCopied prints one copied snapshot (of an offsite when offsite is
// set): a "copied" JSON line, or a line of text.
func (a *app) reportCopied(offsite string, c copier.Copied) {
	if a.jsonOutput {
		_ = a.printJSON(copiedJSON{MessageType: "copied", Offsite: offsite, From: c.From.String(), To: c.To.String(), Blobs: c.Blobs, Stored: c.Stored})
		return
	}
	prefix := ""
	if offsite != "" {
		prefix = "offsite " + offsite + ": "
	}
	a.printf("%ssnapshot %s copied as %s: %d blobs, %s stored\n", prefix, c.From.Short(), c.To.Short(), c.Blobs, formatBytes(uint64(c.Stored)))
}

// copyOffsite copies snapshot id of r to each offsite repository of the
// profile. Every offsite is tried; the error names those that failed.
func (a *app) copyOffsite(ctx context.Context, r *repo.Repository, id crypto.ID, p *profile.Profile) error {
	sn, err := r.LoadSnapshot(ctx, id)
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range p.Offsite {
		err := func() error {
			dst, err := a.openOffsite(ctx, o)
			if err != nil {
				return err
			}
			defer dst.Close()
			_, err = copier.Copy(ctx, dst, r, []*repo.Snapshot{sn}, copier.Options{Downloads: a.downloadsFor(r),
				Copied: func(c copier.Copied) { a.reportCopied(o.Name, c) }})
			return err
		}()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("offsite %s: %w", o.Name, err))
		}
	}
	if len(errs) > 0 {
		// Exit 1 whatever the cause: the backup's own repository is fine
		// (not 10 or 12, which would say it is missing or locked).
		return &exitCodeError{exitError, fmt.Errorf("snapshot %s was written, but its copy failed: %w", id.Short(), errors.Join(errs...))}
	}
	return nil
}
