package backup

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/source/postgres"
	"github.com/cairn-backup/cairn/internal/source/redis"
	"github.com/cairn-backup/cairn/repo"
)

func TestPlanRestore(t *testing.T) {
	p := &profile.Profile{
		Name:     "authentik",
		Postgres: profile.Postgres{Databases: []string{"postgres://db.internal/authentik"}},
		Redis:    profile.Redis{URL: "redis://cache.internal:6379"},
		Restore: profile.Restore{
			TargetDir:      "/",
			PostgresTarget: map[string]string{"authentik": "postgres://u:secret@DB.internal:5432/authentik/"},
			RedisTarget:    "redis://other:6380",
		},
	}
	sn := &repo.Snapshot{Sources: []repo.Source{
		{Kind: postgres.Kind, Name: "/postgres/authentik.dump", Meta: map[string]string{"database": "authentik"}},
		{Kind: postgres.Kind, Name: "/postgres/audit.dump", Meta: map[string]string{"database": "audit"}},
		{Kind: postgres.GlobalsKind, Name: "/postgres/globals.sql"},
		{Kind: redis.Kind, Name: "/redis/dump.rdb"},
		{Kind: source.KindFiles, Name: "/data"},
		{Kind: "redis", Name: "/redis", Status: repo.SourceSkipped, Error: "connection refused"},
	}}
	plan := PlanRestore(p, sn, "")
	want := []struct {
		dest    string
		note    string
		inPlace bool
	}{
		{"postgres://u:secret@DB.internal:5432/authentik/", "", true}, // same host (any case), default port, same path
		{"", `no restore.postgres_target for "audit"`, false},
		{"", "not applied (restore.postgres_globals = false)", false},
		{"redis://other:6380", "replaces its data set", false},
		{"/data", "", true}, // files restored to / replace the live ones
		{"", "skipped at backup: connection refused", false},
	}
	if len(plan.Steps) != len(want) {
		t.Fatalf("%d steps, want %d", len(plan.Steps), len(want))
	}
	for i, w := range want {
		st := plan.Steps[i]
		if st.Dest != w.dest || st.Note != w.note || st.InPlace != w.inPlace {
			t.Errorf("step %d (%s): %+v, want %+v", i, st.Source.Name, st, w)
		}
	}
	live := plan.Live()
	if len(live) != 2 || strings.Contains(strings.Join(live, " "), "secret") {
		t.Errorf("live %q", live)
	}
	var out bytes.Buffer
	plan.Print(&out)
	if s := out.String(); strings.Contains(s, "secret") || !strings.Contains(s, "REPLACES LIVE DATA") || !strings.Contains(s, "profile authentik") {
		t.Errorf("printed plan:\n%s", s)
	}

	// A target directory other than / is not live data; without one,
	// files are not restored.
	if st := PlanRestore(p, sn, "/tmp/r").Steps[4]; st.Dest != "/tmp/r/data" || st.InPlace {
		t.Errorf("files to /tmp/r: %+v", st)
	}
	p.Restore.TargetDir = ""
	if st := PlanRestore(p, sn, "").Steps[4]; st.Dest != "" || st.Note != "no restore.target_dir" {
		t.Errorf("files without a target: %+v", st)
	}
}

func TestSameEndpoint(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"postgres://h/db", "postgres://u:p@H:5432/db", true},
		{"postgres://h/db", "postgres://h:5433/db", false},
		{"postgres://h/db", "postgres://h/other", false},
		{"redis://h", "redis://h:6379/", true},
		{"redis://h", "redis://h:6380", false},
		{"%zz", "%zz", false},
	} {
		if got := sameEndpoint(c.a, c.b); got != c.same {
			t.Errorf("sameEndpoint(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
