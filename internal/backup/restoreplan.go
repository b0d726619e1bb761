package backup

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/source/postgres"
	"github.com/cairn-backup/cairn/internal/source/redis"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
)

// RestoreStep is one source of a deployment's snapshot and where a
// restore puts it.
type RestoreStep struct {
	Source repo.Source
	// Dest is the target: a database or Redis URL, a file path; "" when
	// the source is not restored.
	Dest string
	// Note says why the source is not restored, or how it is.
	Note string
	// InPlace is true when the step replaces the live data the profile
	// backs up (its database, its Redis, files restored to /).
	InPlace bool
	// Problem is why the step cannot run now (Check found it): the
	// restore then refuses to start.
	Problem error
}

// RestorePlan restores a whole deployment from one snapshot: every source
// to the target its profile names. Build it with PlanRestore, show it with
// Print, then Execute it.
type RestorePlan struct {
	Profile   *profile.Profile
	Snapshot  *repo.Snapshot
	TargetDir string // where files and streams go; "" = not restored
	Steps     []RestoreStep
}

// PlanRestore decides where each source of sn goes, from the profile's
// restore section; targetDir overrides restore.target_dir.
func PlanRestore(p *profile.Profile, sn *repo.Snapshot, targetDir string) *RestorePlan {
	if targetDir == "" {
		targetDir = p.Restore.TargetDir
	}
	plan := &RestorePlan{Profile: p, Snapshot: sn, TargetDir: targetDir}
	for _, src := range sn.Sources {
		plan.Steps = append(plan.Steps, planStep(p, src, targetDir))
	}
	return plan
}

func planStep(p *profile.Profile, src repo.Source, targetDir string) RestoreStep {
	st := RestoreStep{Source: src}
	switch {
	case src.Status == repo.SourceSkipped:
		st.Note = "skipped at backup: " + src.Error
	case src.Kind == postgres.Kind:
		db := src.Meta["database"]
		st.Dest = p.Restore.PostgresTargetFor(db)
		if st.Dest == "" {
			st.Note = fmt.Sprintf("no restore.postgres_target for %q", db)
		}
		for _, live := range p.Postgres.Databases {
			if st.Dest != "" && sameEndpoint(st.Dest, live) {
				st.InPlace = true
			}
		}
	case src.Kind == postgres.GlobalsKind:
		if p.Restore.PostgresGlobals {
			st.Dest = "roles of the target server"
		} else {
			st.Note = "not applied (restore.postgres_globals = false)"
		}
	case src.Kind == redis.Kind:
		switch {
		case p.Restore.RedisTarget != "":
			st.Dest = p.Restore.RedisTarget
			st.Note = "replaces its data set"
			st.InPlace = p.Redis.URL != "" && sameEndpoint(st.Dest, p.Redis.URL)
		case p.Restore.RedisRDBDir != "":
			st.Dest = filepath.Join(p.Restore.RedisRDBDir, "dump.rdb")
		default:
			st.Note = "no restore.redis_target or redis_rdb_dir"
		}
	default: // files and streams
		if targetDir == "" {
			st.Note = "no restore.target_dir"
			break
		}
		st.Dest = filepath.Join(targetDir, src.Name)
		st.InPlace = filepath.Clean(targetDir) == "/"
	}
	return st
}

// sameEndpoint reports whether two connection URLs name the same server
// and database (host, port and path; the default ports of PostgreSQL and
// Redis are filled in).
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

// Check looks at every target before anything is restored, changing
// nothing: each database (there, empty, or to be created, and whether the
// profile allows restoring into it), Redis (answers, or its RDB directory
// is writable) and the files' directory (writable). Each step's Note says
// what the restore will do there, its Problem why it cannot; Check returns
// the problems, one line each.
func (plan *RestorePlan) Check(ctx context.Context, rs source.Restore) []string {
	var problems []string
	globals := plan.Profile.Restore.PostgresGlobals
	filesChecked := false
	var filesErr error
	for i := range plan.Steps {
		st := &plan.Steps[i]
		if st.Dest == "" {
			continue
		}
		var note string
		var err error
		switch st.Source.Kind {
		case postgres.Kind:
			note, err = postgres.CheckRestore(ctx, rs, plan.postgresOptions(*st, globals))
			globals = false
		case postgres.GlobalsKind:
			continue // checked with the first database
		case redis.Kind:
			note, err = redis.CheckRestore(ctx, rs, plan.redisOptions())
		default:
			if !filesChecked {
				filesErr, filesChecked = restorer.CheckWritable(plan.TargetDir), true
				if filesErr == nil {
					filesErr = restorer.CheckSpace(plan.TargetDir, plan.filesSize())
				}
			}
			err = filesErr
		}
		if err != nil {
			st.Problem = err
			problems = append(problems, fmt.Sprintf("%s %s: %v", st.Source.Kind, st.Source.Name, err))
		} else if note != "" {
			st.Note = note
		}
	}
	return problems
}

// filesSize is what the file and stream steps write.
func (plan *RestorePlan) filesSize() uint64 {
	var n uint64
	for _, st := range plan.Steps {
		switch st.Source.Kind {
		case postgres.Kind, postgres.GlobalsKind, redis.Kind:
			continue
		}
		if st.Dest != "" {
			n += st.Source.Size
		}
	}
	return n
}

func (plan *RestorePlan) postgresOptions(st RestoreStep, globals bool) postgres.RestoreOptions {
	r := plan.Profile.Restore
	return postgres.RestoreOptions{Target: st.Dest, Database: st.Source.Meta["database"], Create: r.PostgresCreate,
		Clean: r.PostgresClean || st.InPlace, Globals: globals, Jobs: 1, Bin: plan.Profile.Postgres.Bin}
}

func (plan *RestorePlan) redisOptions() redis.RestoreOptions {
	return redis.RestoreOptions{Target: plan.Profile.Restore.RedisTarget, RDBDir: plan.Profile.Restore.RedisRDBDir}
}

// Live lists the steps that replace live data, one line each.
func (plan *RestorePlan) Live() []string {
	var live []string
	for _, st := range plan.Steps {
		if st.InPlace {
			live = append(live, fmt.Sprintf("%s %s -> %s", st.Source.Kind, st.Source.Name, profile.RedactURL(st.Dest)))
		}
	}
	return live
}

// Print writes the plan as a table, passwords hidden.
func (plan *RestorePlan) Print(w io.Writer) {
	sn := plan.Snapshot
	fmt.Fprintf(w, "plan: snapshot %s of profile %s, taken %s on %s\n", sn.ID.Short(), plan.Profile.Name, sn.Time.Local().Format("2006-01-02 15:04:05 MST"), sn.Hostname)
	for _, st := range plan.Steps {
		dest := profile.RedactURL(st.Dest)
		if dest == "" {
			dest = "-"
		}
		note := st.Note
		if st.InPlace {
			note = strings.TrimSpace("REPLACES LIVE DATA " + note)
		}
		if st.Problem != nil {
			note = "CANNOT RUN: " + st.Problem.Error()
		}
		fmt.Fprintf(w, "  %-16s %-36s %10s  -> %s  %s\n", st.Source.Kind, st.Source.Name, source.FormatBytes(st.Source.Size), dest, note)
	}
}

// Execute restores every step with a target: databases first, then
// Redis, then files, because a deployment starts from its database and
// files are the cheapest to redo. warn reports a file that could not be
// restored; the restore goes on and fails at the end.
//
// A plan with a Problem is refused. A step that fails stops the restore,
// and the error names what was restored before it and what was not.
func (plan *RestorePlan) Execute(ctx context.Context, rs source.Restore, warn func(path string, err error)) error {
	var done, pending []string
	for _, st := range plan.Steps {
		if st.Problem != nil {
			return fmt.Errorf("refusing to start: %s %s: %w", st.Source.Kind, st.Source.Name, st.Problem)
		}
		if st.Dest != "" && st.Source.Kind != postgres.GlobalsKind {
			pending = append(pending, st.Source.Name)
		}
	}
	failed := func(what string, err error) error {
		return fmt.Errorf("restore %s: %w; restored before the failure: %s; not restored: %s",
			what, err, listOrNone(done), listOrNone(pending))
	}
	finished := func(names ...string) {
		for _, n := range names {
			done = append(done, n)
			pending = slices.DeleteFunc(pending, func(p string) bool { return p == n })
		}
	}
	globals := plan.Profile.Restore.PostgresGlobals
	for _, st := range plan.Steps {
		if st.Dest == "" || st.Source.Kind != postgres.Kind {
			continue
		}
		if err := postgres.Restore(ctx, rs, plan.postgresOptions(st, globals)); err != nil {
			return failed(st.Source.Name, err)
		}
		globals = false
		finished(st.Source.Name)
	}
	for _, st := range plan.Steps {
		if st.Dest == "" || st.Source.Kind != redis.Kind {
			continue
		}
		if err := redis.Restore(ctx, rs, plan.redisOptions()); err != nil {
			return failed(st.Source.Name, err)
		}
		finished(st.Source.Name)
	}
	if err := plan.restoreFiles(ctx, rs, warn); err != nil {
		return failed("files", err)
	}
	return nil
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "nothing"
	}
	return strings.Join(names, ", ")
}

// restoreFiles restores the file and stream steps in one pass over the
// snapshot's tree.
func (plan *RestorePlan) restoreFiles(ctx context.Context, rs source.Restore, warn func(string, error)) error {
	var includes []string
	for _, st := range plan.Steps {
		switch st.Source.Kind {
		case postgres.Kind, postgres.GlobalsKind, redis.Kind:
			continue
		}
		if st.Dest != "" {
			includes = append(includes, st.Source.Name)
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
	res, err := restorer.Restore(ctx, rs.Repo, plan.Snapshot.Tree, restorer.Options{Target: plan.TargetDir, Includes: inc,
		Chown: os.Geteuid() == 0, Downloads: rs.Downloads, MaxEntries: rs.MaxEntries, Warn: warn})
	if err != nil {
		return fmt.Errorf("restore files: %w", err)
	}
	if res.Warnings > 0 {
		return fmt.Errorf("restore of files finished with %d error(s)", res.Warnings)
	}
	rs.Out.Printf("files: %d files, %d directories, %s restored to %s and verified against their content hashes in %s\n",
		res.Files, res.Dirs, source.FormatBytes(res.Bytes), plan.TargetDir, time.Since(start).Round(time.Millisecond))
	return nil
}
