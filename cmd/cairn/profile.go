package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/source/postgres"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/profile"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
)

// loadProfile reads a profile and takes the repository and password source
// from it unless flags or the environment already name them.
func (a *app) loadProfile(path string) (*profile.Profile, error) {
	p, err := profile.Load(path)
	if err != nil {
		return nil, err
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
	args = append(args, p.Files.Paths...)
	f.excludes = append(f.excludes, p.Files.Excludes...)
	f.tags = append(f.tags, append(append([]string(nil), p.Tags...), p.Tag())...)
	if f.host == "" {
		f.host = p.Host
	}
	f.pg.urls = append(f.pg.urls, p.Postgres.Databases...)
	if p.Postgres.Format != "" && !cmd.Flags().Changed("pg-format") {
		f.pg.format = p.Postgres.Format
	}
	if p.Postgres.Globals != nil && !*p.Postgres.Globals {
		f.pg.noGlobals = true
	}
	if p.Postgres.Bin != "" && f.pg.bin == "" {
		f.pg.bin = p.Postgres.Bin
	}
	f.pg.optional = f.pg.optional || p.Postgres.Optional
	if f.redis.url == "" && f.redis.rdbFile == "" {
		f.redis.url, f.redis.rdbFile = p.Redis.URL, p.Redis.RDBFile
	}
	f.redis.optional = f.redis.optional || p.Redis.Optional
	return args, nil
}

// planStep is one source of a profile restore and where it goes.
type planStep struct {
	src     repo.Source
	dest    string // "" = not restored
	why     string // why not, or a note
	inPlace bool   // replaces live data
}

// sameEndpoint compares two connection URLs by host, port and path.
func sameEndpoint(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	port := func(u *url.URL, def string) string {
		if u.Port() != "" {
			return u.Port()
		}
		return def
	}
	def := "5432"
	if strings.HasPrefix(ua.Scheme, "redis") {
		def = "6379"
	}
	return strings.EqualFold(ua.Hostname(), ub.Hostname()) && port(ua, def) == port(ub, def) &&
		strings.Trim(ua.Path, "/") == strings.Trim(ub.Path, "/")
}

func planProfileRestore(p *profile.Profile, sn *repo.Snapshot, targetDir string) []planStep {
	var steps []planStep
	for _, src := range sn.Sources {
		st := planStep{src: src}
		switch {
		case src.Status == repo.SourceSkipped:
			st.why = "skipped at backup: " + src.Error
		case src.Kind == postgres.Kind:
			db := src.Meta["database"]
			st.dest = p.Restore.PostgresTargetFor(db)
			if st.dest == "" {
				st.why = fmt.Sprintf("no restore.postgres_target for %q", db)
			}
			for _, live := range p.Postgres.Databases {
				if st.dest != "" && sameEndpoint(st.dest, live) {
					st.inPlace = true
				}
			}
			if p.Restore.PostgresCreate {
				st.why = "created"
			}
		case src.Kind == postgres.GlobalsKind:
			if p.Restore.PostgresGlobals {
				st.dest = "roles of the target server"
			} else {
				st.why = "not applied (restore.postgres_globals = false)"
			}
		case src.Kind == "redis":
			switch {
			case p.Restore.RedisTarget != "":
				st.dest = p.Restore.RedisTarget
				st.why = "replaces its data set"
				st.inPlace = p.Redis.URL != "" && sameEndpoint(st.dest, p.Redis.URL)
			case p.Restore.RedisRDBDir != "":
				st.dest = filepath.Join(p.Restore.RedisRDBDir, "dump.rdb")
			default:
				st.why = "no restore.redis_target or redis_rdb_dir"
			}
		default: // files and streams
			if targetDir == "" {
				st.why = "no restore.target_dir"
				break
			}
			st.dest = filepath.Join(targetDir, src.Name)
			st.inPlace = filepath.Clean(targetDir) == "/"
		}
		steps = append(steps, st)
	}
	return steps
}

// redactDest hides a password in a connection URL for printing.
func redactDest(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return s
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
	if targetDir == "" {
		targetDir = p.Restore.TargetDir
	}
	r, err := a.openRepo(ctx, true)
	if err != nil {
		return err
	}
	defer r.Close()
	sn, err := a.restoreSnapshot(ctx, r, args, atTime, host, []string{p.Tag()})
	if err != nil {
		return err
	}
	steps := planProfileRestore(p, sn, targetDir)
	fmt.Fprintf(a.stdout, "plan: snapshot %s of profile %s, taken %s on %s\n", sn.ID.Short(), p.Name, sn.Time.Local().Format("2006-01-02 15:04:05 MST"), sn.Hostname)
	var live []string
	for _, st := range steps {
		dest := redactDest(st.dest)
		if dest == "" {
			dest = "-"
		}
		note := st.why
		if st.inPlace {
			note = strings.TrimSpace("REPLACES LIVE DATA " + note)
			live = append(live, fmt.Sprintf("%s %s -> %s", st.src.Kind, st.src.Name, dest))
		}
		fmt.Fprintf(a.stdout, "  %-16s %-36s %10s  -> %s  %s\n", st.src.Kind, st.src.Name, formatBytes(st.src.Size), dest, note)
	}
	if dryRun {
		fmt.Fprintln(a.stdout, "dry run: nothing was restored")
		return nil
	}
	if len(live) > 0 && !inPlace {
		return fmt.Errorf("the plan replaces live data (%s); run again with --in-place to do that", strings.Join(live, "; "))
	}
	if len(live) > 0 {
		fmt.Fprintf(a.stderr, "replacing live data: %s\n", strings.Join(live, "; "))
	}

	// Databases first, then Redis, then files: a deployment starts from its
	// database, and files are the cheapest to redo.
	globalsDone := false
	for _, st := range steps {
		if st.dest == "" || st.src.Kind != postgres.Kind {
			continue
		}
		f := pgRestoreFlags{target: st.dest, database: st.src.Meta["database"], create: p.Restore.PostgresCreate,
			clean: p.Restore.PostgresClean || st.inPlace, globals: p.Restore.PostgresGlobals && !globalsDone, jobs: 1, bin: p.Postgres.Bin}
		if err := a.pgRestore(ctx, r, sn, &f); err != nil {
			return fmt.Errorf("restore %s: %w", st.src.Name, err)
		}
		globalsDone = true
	}
	for _, st := range steps {
		if st.dest == "" || st.src.Kind != "redis" {
			continue
		}
		f := redisRestoreFlags{target: p.Restore.RedisTarget, rdbDir: p.Restore.RedisRDBDir}
		if err := a.redisRestore(ctx, r, sn, &f); err != nil {
			return fmt.Errorf("restore %s: %w", st.src.Name, err)
		}
	}
	var includes []string
	for _, st := range steps {
		if st.dest != "" && st.src.Kind != postgres.Kind && st.src.Kind != postgres.GlobalsKind && st.src.Kind != "redis" {
			includes = append(includes, st.src.Name)
		}
	}
	if len(includes) == 0 {
		return nil
	}
	inc, err := pathmatch.ParseList(includes)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := restorer.Restore(ctx, r, sn.Tree, restorer.Options{Target: targetDir, Includes: inc, Chown: os.Geteuid() == 0, Downloads: a.downloadsFor(r),
		Warn: func(p string, err error) { fmt.Fprintf(a.stderr, "error: %s: %v\n", p, unwrapPath(err)) }})
	if err != nil {
		return fmt.Errorf("restore files: %w", err)
	}
	if res.Warnings > 0 {
		return fmt.Errorf("restore of files finished with %d error(s)", res.Warnings)
	}
	a.printf("files: %d files, %d directories, %s restored to %s and verified against their content hashes in %s\n",
		res.Files, res.Dirs, formatBytes(res.Bytes), targetDir, time.Since(start).Round(time.Millisecond))
	return nil
}

// applyForgetProfile limits forget to the profile's snapshots and uses its
// retention policy unless --keep-* flags were given.
func (a *app) applyForgetProfile(o *forgetOptions) error {
	p, err := a.loadProfile(o.config)
	if err != nil {
		return err
	}
	if len(o.tags) == 0 {
		o.tags = []string{p.Tag()}
	} else {
		for i := range o.tags {
			o.tags[i] += "," + p.Tag()
		}
	}
	if o.policy.Empty() && o.within == "" {
		rt := p.Retention
		o.policy.Last, o.policy.Hourly, o.policy.Daily = rt.KeepLast, rt.KeepHourly, rt.KeepDaily
		o.policy.Weekly, o.policy.Monthly, o.policy.Yearly = rt.KeepWeekly, rt.KeepMonthly, rt.KeepYearly
		o.policy.Tags = rt.KeepTags
		o.within = rt.KeepWithin
	}
	return nil
}
