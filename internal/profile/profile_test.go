package profile

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleProfileLoads(t *testing.T) {
	p, err := Load(filepath.Join("..", "..", "docs", "examples", "authentik.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "authentik" || len(p.Postgres.Databases) != 1 || p.Redis.URL == "" || len(p.Files.Paths) != 5 {
		t.Fatalf("example profile: %+v", p)
	}
	if p.Restore.PostgresTargetFor("authentik") == "" || p.Retention.KeepDaily != 7 {
		t.Fatalf("restore/retention: %+v %+v", p.Restore, p.Retention)
	}
}

func TestProfileErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"typo":        "name = \"x\"\n[files]\npath = [\"/a\"]\n",
		"no sources":  "name = \"x\"\n",
		"relative":    "[files]\npaths = [\"data\"]\n",
		"bad pg url":  "[postgres]\ndatabases = [\"mysql://x\"]\n",
		"bad format":  "[postgres]\ndatabases = [\"postgres://h/db\"]\nformat = \"tar\"\n",
		"both redis":  "[files]\npaths=[\"/a\"]\n[restore]\nredis_target=\"redis://x\"\nredis_rdb_dir=\"/d\"\n",
		"toml syntax": "[files\n",
		"pitr no url": "[postgres]\ndatabases = [\"postgres://h/db\"]\npitr = true\n",
	}
	for name, body := range cases {
		p := filepath.Join(dir, "p.toml")
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := Load(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	os.WriteFile(filepath.Join(dir, "ok.toml"), []byte("[files]\npaths = [\"/a\"]\n"), 0o600)
	p, err := Load(filepath.Join(dir, "ok.toml"))
	if err != nil || p.Name != "ok" || p.Tag() != "profile:ok" {
		t.Fatalf("minimal profile: %+v %v", p, err)
	}
	os.WriteFile(filepath.Join(dir, "pitr.toml"), []byte("[postgres]\npitr = true\nbase_url = \"postgres://replicator@h/postgres\"\n"), 0o600)
	if p, err := Load(filepath.Join(dir, "pitr.toml")); err != nil || !p.Postgres.PITR {
		t.Fatalf("a profile of base backups only: %+v %v", p, err)
	}
	if got := RedactURL("postgres://u:secret@h/db"); strings.Contains(got, "secret") {
		t.Fatalf("password not redacted: %s", got)
	}
}

// The scheduling examples are checked with the tools that exist here.
func TestSchedulingExamplesSyntax(t *testing.T) {
	deploy := filepath.Join("..", "..", "deploy")
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		for _, f := range []string{"cairn-authentik.service", "cairn-authentik.timer"} {
			b, err := os.ReadFile(filepath.Join(deploy, "systemd", f))
			if err != nil {
				t.Fatal(err)
			}
			// verify insists that the binary exists: point it at one that does.
			s := strings.ReplaceAll(string(b), "/usr/local/bin/cairn", "/bin/true")
			os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644)
		}
		out, err := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, "cairn-authentik.service"), filepath.Join(dir, "cairn-authentik.timer")).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze not found: unit files not verified")
	}
	py, err := exec.LookPath("python3")
	if err == nil && exec.Command(py, "-c", "import yaml").Run() == nil {
		for _, f := range []string{filepath.Join("kubernetes", "cronjob.yaml"), filepath.Join("compose", "docker-compose.yml")} {
			script := `import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
assert isinstance(d, dict), "not a mapping"
if "kind" in d:
    assert d["kind"] == "CronJob" and d["apiVersion"] == "batch/v1"
    c = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][0] == "backup"
else:
    assert "cairn" in d["services"]
`
			out, err := exec.Command(py, "-c", script, filepath.Join(deploy, f)).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", f, err, out)
			}
		}
	} else {
		t.Log("python3 with yaml not found: YAML examples not parsed")
	}
}
