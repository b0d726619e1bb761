package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

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

// openFrom opens the repository --from-repo names (config and keys only).
func (a *app) openFrom(ctx context.Context, f fromFlags) (*repo.Repository, error) {
	if f.repo == "" {
		return nil, &exitCodeError{exitError, errors.New("no source repository: use --from-repo or set CAIRN_FROM_REPOSITORY")}
	}
	be, err := a.openBackendAt(f.repo, "CAIRN_FROM_")
	if err != nil {
		return nil, err
	}
	cfgData, err := repo.ReadConfig(ctx, be)
	if err != nil {
		return nil, fmt.Errorf("source repository: %w", err)
	}
	pw, err := readPassword(ctx, f.passwordFile, f.passwordCommand, "CAIRN_FROM_PASSWORD", "enter the password of "+be.Location()+": ", false)
	if err != nil {
		return nil, err
	}
	r, err := repo.OpenConfig(ctx, be, cfgData, pw, a.repoOptions(be))
	if err != nil {
		return nil, fmt.Errorf("source repository %s: %w", be.Location(), err)
	}
	return r, nil
}
