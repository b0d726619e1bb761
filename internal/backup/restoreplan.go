package backup

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
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
		if p.Restore.PostgresCreate {
			st.Note = "created"
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
		fmt.Fprintf(w, "  %-16s %-36s %10s  -> %s  %s\n", st.Source.Kind, st.Source.Name, source.FormatBytes(st.Source.Size), dest, note)
	}
}

// Execute restores every step with a target: databases first, then
// Redis, then files, because a deployment starts from its database and
// files are the cheapest to redo. warn reports a file that could not be
// restored; the restore goes on and fails at the end.
func (plan *RestorePlan) Execute(ctx context.Context, rs source.Restore, warn func(path string, err error)) error {
	p := plan.Profile
	globalsDone := false
	for _, st := range plan.Steps {
		if st.Dest == "" || st.Source.Kind != postgres.Kind {
			continue
		}
		o := postgres.RestoreOptions{Target: st.Dest, Database: st.Source.Meta["database"], Create: p.Restore.PostgresCreate,
			Clean: p.Restore.PostgresClean || st.InPlace, Globals: p.Restore.PostgresGlobals && !globalsDone, Jobs: 1, Bin: p.Postgres.Bin}
		if err := postgres.Restore(ctx, rs, o); err != nil {
			return fmt.Errorf("restore %s: %w", st.Source.Name, err)
		}
		globalsDone = true
	}
	for _, st := range plan.Steps {
		if st.Dest == "" || st.Source.Kind != redis.Kind {
			continue
		}
		o := redis.RestoreOptions{Target: p.Restore.RedisTarget, RDBDir: p.Restore.RedisRDBDir}
		if err := redis.Restore(ctx, rs, o); err != nil {
			return fmt.Errorf("restore %s: %w", st.Source.Name, err)
		}
	}
	return plan.restoreFiles(ctx, rs, warn)
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
		Chown: os.Geteuid() == 0, Downloads: rs.Downloads, Warn: warn})
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
