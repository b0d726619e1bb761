package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/backup"
	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/repo/backend"
)

// loadProfile reads a profile and takes the repository and password source
// from it unless flags or the environment already name them.
func (a *app) loadProfile(path string) (*profile.Profile, error) {
	p, err := profile.Load(path)
	if err != nil {
		return nil, err
	}
	env, err := p.ReadEnvFile()
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.Name, err)
	}
	for name, value := range env {
		// The credentials are read from the environment where they are
		// used (S3, Redis, PostgreSQL's tools); what is set already wins.
		if _, set := os.LookupEnv(name); !set {
			if err := os.Setenv(name, value); err != nil {
				return nil, fmt.Errorf("profile %s: env_file: %w", p.Name, err)
			}
		}
	}
	if a.repoLocation == "" {
		a.repoLocation = p.Repository
	}
	if a.passwordFile == "" && a.passwordCommand == "" {
		if _, ok := os.LookupEnv("CAIRN_PASSWORD"); !ok {
			a.passwordFile, a.passwordCommand = p.PasswordFile, p.PasswordCommand
		}
	}
	return p, nil
}

// applyBackupProfile turns a profile into backup flags: its sources are
// added to those given on the command line.
func (a *app) applyBackupProfile(cmd *cobra.Command, f *backupFlags, args []string) ([]string, error) {
	p, err := a.loadProfile(f.config)
	if err != nil {
		return nil, err
	}
	f.profile = p
	for _, path := range p.Files.Paths {
		// A path that does not exist is a mistake in the profile (authentik
		// 2025.12 moved /media to /data), not an unreadable file: every
		// night would silently lose it.
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("profile %s: files.paths: %s does not exist", p.Name, path)
		}
	}
	args = append(args, p.Files.Paths...)
	f.excludes = append(f.excludes, p.Files.Excludes...)
	f.tags = append(f.tags, append(append([]string(nil), p.Tags...), p.Tag())...)
	if f.host == "" {
		f.host = p.Host
	}
	for _, s := range f.sources {
		s.FromProfile(p, cmd.Flags().Changed)
	}
	return args, nil
}

// runProfileRestore restores every source of a profile's snapshot to the
// targets the profile names, after printing the plan.
func (a *app) runProfileRestore(ctx context.Context, cfgPath string, args []string, at, host, targetDir string, dryRun, inPlace bool) error {
	p, err := a.loadProfile(cfgPath)
	if err != nil {
		return err
	}
	var atTime time.Time
	if at != "" {
		if len(args) > 0 {
			return errors.New("give either a SNAPSHOT or --at TIME, not both")
		}
		if atTime, err = parseAtFlag(at); err != nil {
			return err
		}
	} else if len(args) == 0 {
		args = []string{"latest"}
	}
	if host == "" {
		host = p.Host
	}
	r, err := a.openRepo(ctx, true, backend.Snapshot)
	if err != nil {
		return err
	}
	defer r.Close()
	sn, err := a.restoreSnapshot(ctx, r, args, atTime, host, []string{p.Tag()})
	if err != nil {
		return err
	}
	plan := backup.PlanRestore(p, sn, targetDir)
	problems := plan.Check(ctx, a.sourceRestore(r, sn))
	plan.Print(a.stdout)
	if len(problems) > 0 {
		// The dry run and the run refuse alike: nothing was changed.
		return fmt.Errorf("the plan cannot run, nothing was restored: %s", strings.Join(problems, "; "))
	}
	live := plan.Live()
	if len(live) > 0 && !inPlace {
		return fmt.Errorf("the plan replaces live data (%s); run again with --in-place to do that", strings.Join(live, "; "))
	}
	if dryRun {
		fmt.Fprintln(a.stdout, "dry run: nothing was restored; every target was checked")
		return nil
	}
	if len(live) > 0 {
		fmt.Fprintf(a.stderr, "replacing live data: %s\n", strings.Join(live, "; "))
	}
	return plan.Execute(ctx, a.sourceRestore(r, sn), func(p string, err error) {
		fmt.Fprintf(a.stderr, "error: %s: %v\n", p, unwrapPath(err))
	})
}

// applyForgetProfile limits forget to the profile's snapshots and uses its
// retention policy unless --keep-* flags were given.
func (a *app) applyForgetProfile(o *forgetOptions, named bool) error {
	p, err := a.loadProfile(o.config)
	if err != nil {
		return err
	}
	o.profile = p
	if len(o.tags) == 0 {
		o.tags = []string{p.Tag()}
	} else {
		for i := range o.tags {
			o.tags[i] += "," + p.Tag()
		}
	}
	if !o.groupByChanged {
		// The profile's snapshots are one series per host, whatever paths
		// a night held (an optional source skipped).
		o.groupBy = "host"
	}
	if o.policy.Empty() && o.within == "" && !named {
		rt := p.Retention
		o.policy.Last, o.policy.Hourly, o.policy.Daily = rt.KeepLast, rt.KeepHourly, rt.KeepDaily
		o.policy.Weekly, o.policy.Monthly, o.policy.Yearly = rt.KeepWeekly, rt.KeepMonthly, rt.KeepYearly
		o.policy.Tags = rt.KeepTags
		o.within = rt.KeepWithin
		if o.policy.Empty() && o.within == "" && !named {
			// A nightly 'forget --config' that silently keeps everything
			// lets the repository grow until the disk is full.
			return fmt.Errorf("profile %s has no [retention] policy: add one (keep_daily = 7, ...) or give --keep-* options", p.Name)
		}
	}
	return nil
}
