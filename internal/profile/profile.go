// Package profile reads a deployment profile: one TOML file naming the
// repository, every source of a deployment (PostgreSQL databases, Redis,
// directories and files), the retention policy and where each source is
// restored to.
package profile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Profile is the whole file.
type Profile struct {
	// Name identifies the deployment; it is recorded as a snapshot tag
	// "profile:NAME" and groups snapshots for retention.
	Name            string `toml:"name"`
	Repository      string `toml:"repository"`
	PasswordFile    string `toml:"password_file"`
	PasswordCommand string `toml:"password_command"`
	// EnvFile names a file of NAME=VALUE lines (mode 0600) with the
	// credentials a profile must not hold itself: AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, CAIRN_REDIS_PASSWORD, PGPASSWORD or PGPASSFILE.
	// Variables already set in the environment win.
	EnvFile   string    `toml:"env_file"`
	Host      string    `toml:"host"`
	Tags      []string  `toml:"tags"`
	Postgres  Postgres  `toml:"postgres"`
	Redis     Redis     `toml:"redis"`
	Files     Files     `toml:"files"`
	Retention Retention `toml:"retention"`
	Restore   Restore   `toml:"restore"`
	Notify    Notify    `toml:"notify"`
	// Offsite repositories get a copy of each snapshot backup --config
	// writes, and their own retention in forget --config.
	Offsite []Offsite `toml:"offsite"`
}

// Offsite is a repository made with init --from-repo from the profile's,
// that receives a copy of each new snapshot.
type Offsite struct {
	Name            string `toml:"name"`
	Repository      string `toml:"repository"`
	PasswordFile    string `toml:"password_file"`
	PasswordCommand string `toml:"password_command"`
	// EnvFile (mode 0600) holds this repository's AWS_* credentials; they
	// apply to it alone, not to the profile's repository.
	EnvFile   string    `toml:"env_file"`
	Retention Retention `toml:"retention"`
}

// Notify pings a monitoring URL around each backup --config, with the
// healthchecks.io convention: URL/start when it begins, URL on success,
// URL/fail (with the error line as the body) on failure or a partial
// snapshot.
type Notify struct {
	URL string `toml:"url"`
}

// Postgres lists the databases to dump.
type Postgres struct {
	// Databases are connection URLs, one database each. Passwords belong in
	// PGPASSWORD or a .pgpass file, not here.
	Databases []string `toml:"databases"`
	Format    string   `toml:"format"` // "custom" (default) or "plain"
	// Globals stores roles and tablespaces (pg_dumpall --globals-only).
	// Off unless set: it needs a superuser, and an application's own
	// role (authentik's) is not one.
	Globals  bool   `toml:"globals"`
	Optional bool   `toml:"optional"`
	Bin      string `toml:"bin"` // directory of pg_dump/pg_restore/psql
	// PITR adds a physical base backup of BaseURL (pg_basebackup) to every
	// backup, for point-in-time recovery with the WAL the server archives
	// with cairn wal-push. BaseURL needs a role with REPLICATION.
	PITR    bool   `toml:"pitr"`
	BaseURL string `toml:"base_url"`
}

// Redis is the optional cache source.
type Redis struct {
	URL      string `toml:"url"`
	RDBFile  string `toml:"rdb_file"` // back up a saved dump.rdb instead of syncing
	Optional bool   `toml:"optional"`
}

// Files are directories and single files.
type Files struct {
	Paths    []string `toml:"paths"`
	Excludes []string `toml:"exclude"`
}

// Retention is the forget policy (restic's semantics).
type Retention struct {
	KeepLast    int      `toml:"keep_last"`
	KeepHourly  int      `toml:"keep_hourly"`
	KeepDaily   int      `toml:"keep_daily"`
	KeepWeekly  int      `toml:"keep_weekly"`
	KeepMonthly int      `toml:"keep_monthly"`
	KeepYearly  int      `toml:"keep_yearly"`
	KeepWithin  string   `toml:"keep_within"`
	KeepTags    []string `toml:"keep_tags"`
}

// Restore says where each source goes.
type Restore struct {
	// TargetDir receives the files (their absolute paths below it).
	TargetDir string `toml:"target_dir"`
	// PostgresTarget maps a database name to the URL it is restored into;
	// "*" applies to any database not named.
	PostgresTarget  map[string]string `toml:"postgres_target"`
	PostgresCreate  bool              `toml:"postgres_create"`
	PostgresClean   bool              `toml:"postgres_clean"`
	PostgresGlobals bool              `toml:"postgres_globals"`
	RedisTarget     string            `toml:"redis_target"`
	RedisRDBDir     string            `toml:"redis_rdb_dir"`
}

// Load reads and validates a profile. Unknown keys are errors, so a typo
// never silently drops a source.
func Load(path string) (*Profile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	var p Profile
	md, err := toml.Decode(string(data), &p)
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("profile %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	if p.Name == "" {
		p.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return &p, p.Validate()
}

// Validate checks the profile for mistakes that would only show at night.
func (p *Profile) Validate() error {
	var errs []error
	if strings.ContainsAny(p.Name, " ,") || p.Name == "" {
		errs = append(errs, fmt.Errorf("name %q: use letters, digits, - and _", p.Name))
	}
	if len(p.Postgres.Databases) == 0 && !p.Postgres.PITR && p.Redis.URL == "" && p.Redis.RDBFile == "" && len(p.Files.Paths) == 0 {
		errs = append(errs, errors.New("no sources: give postgres.databases, redis.url or files.paths"))
	}
	for _, u := range p.Postgres.Databases {
		if !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
			errs = append(errs, fmt.Errorf("postgres.databases: %q is not a postgres:// URL", RedactURL(u)))
		}
	}
	if p.Postgres.PITR && !strings.HasPrefix(p.Postgres.BaseURL, "postgres://") && !strings.HasPrefix(p.Postgres.BaseURL, "postgresql://") {
		errs = append(errs, errors.New("postgres.pitr = true needs postgres.base_url, the postgres:// URL of a role with REPLICATION for pg_basebackup"))
	}
	switch p.Postgres.Format {
	case "", "custom", "plain":
	default:
		errs = append(errs, fmt.Errorf("postgres.format %q: want custom or plain", p.Postgres.Format))
	}
	if p.Redis.URL != "" && !strings.HasPrefix(p.Redis.URL, "redis://") && !strings.HasPrefix(p.Redis.URL, "rediss://") {
		errs = append(errs, fmt.Errorf("redis.url %q is not a redis:// URL", RedactURL(p.Redis.URL)))
	}
	for _, fp := range p.Files.Paths {
		if !filepath.IsAbs(fp) {
			errs = append(errs, fmt.Errorf("files.paths: %q must be absolute", fp))
		}
	}
	if p.Restore.RedisTarget != "" && p.Restore.RedisRDBDir != "" {
		errs = append(errs, errors.New("restore: give redis_target or redis_rdb_dir, not both"))
	}
	seen := map[string]bool{}
	for i, o := range p.Offsite {
		switch {
		case o.Name == "" || strings.ContainsAny(o.Name, " ,"):
			errs = append(errs, fmt.Errorf("offsite %d: name %q: use letters, digits, - and _", i+1, o.Name))
		case seen[o.Name]:
			errs = append(errs, fmt.Errorf("offsite %s: the name is used twice", o.Name))
		case o.Repository == "":
			errs = append(errs, fmt.Errorf("offsite %s: no repository", o.Name))
		case o.PasswordFile == "" && o.PasswordCommand == "":
			errs = append(errs, fmt.Errorf("offsite %s: give password_file or password_command", o.Name))
		}
		seen[o.Name] = true
	}
	return errors.Join(errs...)
}

// Tag is the snapshot tag that marks this profile's snapshots.
func (p *Profile) Tag() string { return "profile:" + p.Name }

// PostgresTargetFor returns the restore URL for a database name.
func (r *Restore) PostgresTargetFor(db string) string {
	if u, ok := r.PostgresTarget[db]; ok {
		return u
	}
	return r.PostgresTarget["*"]
}

// RedactURL hides the password of a connection URL (user:xxxxx@), for
// messages and plans; it works on URLs too malformed to parse.
func RedactURL(u string) string {
	at := strings.Index(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	userinfo := u[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return u[:scheme+3] + userinfo[:i] + ":xxxxx" + u[at:]
	}
	return u
}

// ReadEnvFile reads the profile's env_file: NAME=VALUE lines, blank lines
// and # comments skipped, an "export " prefix and quotes around the value
// allowed. A file that others may read is refused: it holds secrets.
func (p *Profile) ReadEnvFile() (map[string]string, error) {
	return ReadEnvFile(p.EnvFile)
}

// ReadEnvFile reads NAME=VALUE lines from path (none when path is empty),
// refusing a file that others may read.
func ReadEnvFile(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("env_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("env_file %s is readable by others (mode %v): it holds secrets, chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("env_file: %w", err)
	}
	env := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("env_file %s line %d: want NAME=VALUE", path, i+1)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		env[name] = value
	}
	return env, nil
}
