package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
)

// The pgnights data set: a nightly pg_dump of an authentik-like database
// over a series of nights, each night after a day of changes that an
// application makes (rows updated all over the tables, an audit log
// appended at one end and expired at the other, sessions created and
// expired). A day-1/day-2 pair shows what the second backup costs; a
// series shows whether the cost stays put as the delta history grows.
const (
	nightsDataset = "pgnights"
	nightsDB      = "authentik"
	nightsFile    = "authentik.pgdump" // the name both tools store
	// nightsSeed seeds every random choice of the generator (PostgreSQL's
	// setseed, pgbench --random-seed), so that every generation makes the
	// same series; the generator version goes into the cache name too.
	nightsSeed      = 20260302
	nightsGenerator = 1
)

// nightsProfile is the database and what every day changes.
type nightsProfile struct {
	Nights int `json:"nights"`
	// The initial database: pgbench -i at Scale (random filler), Users
	// users, Events events (the audit log of Events/EventsPerDay days),
	// and the sessions of the last nine days.
	Scale  int `json:"pgbench_scale"`
	Users  int `json:"users"`
	Events int `json:"events"`
	// Every day before its night's dump.
	EventsPerDay   int `json:"events_per_day"`
	SessionsPerDay int `json:"sessions_per_day"`
	Transactions   int `json:"pgbench_transactions_per_day"`
	UserUpdates    int `json:"user_updates_per_day"`
	NewUsers       int `json:"new_users_per_day"`
	SessionUpdates int `json:"session_updates_per_day"`
}

// retentionDays is how long an event lives: the initial log is as long as
// the retention, so that each day expires about what it appends.
func (p nightsProfile) retentionDays() int { return max(1, p.Events/max(1, p.EventsPerDay)) }

// nightsInfo describes the cached series (info.json).
type nightsInfo struct {
	Profile         nightsProfile    `json:"profile"`
	Seed            int              `json:"seed"`
	Generator       int              `json:"generator_version"`
	ServerVersion   string           `json:"server_version"`
	InitialDBBytes  int64            `json:"initial_database_bytes"`
	InitialTables   map[string]int64 `json:"initial_table_bytes"`
	Nights          []nightInfo      `json:"nights"`
	InitialSeconds  float64          `json:"initial_load_seconds"`
	GenerateSeconds float64          `json:"generate_seconds"`
}

// nightInfo describes one night's dump and the database it was taken of.
type nightInfo struct {
	Night       int              `json:"night"`
	File        string           `json:"file"`
	Time        time.Time        `json:"time"`
	DumpBytes   int64            `json:"dump_bytes"`
	SHA256      string           `json:"sha256"`
	DBBytes     int64            `json:"database_bytes"`
	Rows        map[string]int64 `json:"rows"`
	DaySeconds  float64          `json:"day_changes_seconds"`
	DumpSeconds float64          `json:"pg_dump_seconds"`
}

// nightTime is the time of night n's dump (02:00 UTC); day n is the 24
// hours before it.
func nightTime(n int) time.Time {
	return time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC).Add(time.Duration(n-1) * 24 * time.Hour)
}

func nightFile(n int) string { return fmt.Sprintf("night-%02d.pgdump", n) }

// nightsCorpus returns the cached series of the profile (generating it
// first if missing): its directory and description. The cache name holds
// the main figures and a hash of all parameters and the generator version.
func (b *bench) nightsCorpus() (string, *nightsInfo, error) {
	p := b.prof.Nights
	js, err := json.Marshal(struct {
		P         nightsProfile
		Seed, Gen int
	}{p, nightsSeed, nightsGenerator})
	if err != nil {
		return "", nil, err
	}
	h := sha256.Sum256(js)
	name := fmt.Sprintf("pgnights-s%d-u%d-e%d-n%d-%s", p.Scale, p.Users, p.Events, p.Nights, hex.EncodeToString(h[:4]))
	dir, err := b.corpus(name, b.genNights)
	if err != nil {
		return "", nil, err
	}
	info := &nightsInfo{}
	if err := readJSONFile(filepath.Join(dir, "info.json"), info); err != nil {
		return "", nil, err
	}
	if len(info.Nights) != p.Nights {
		return "", nil, fmt.Errorf("%s: info.json lists %d nights, want %d", dir, len(info.Nights), p.Nights)
	}
	return dir, info, nil
}

// nightsGen holds the generation's server and logs its steps.
type nightsGen struct {
	b   *bench
	s   *pgtest.Server
	p   nightsProfile
	dir string
}

// step runs one generation step and logs its start and duration, so that
// the first (long) run shows its progress.
func (g *nightsGen) step(what string, fn func() error) error {
	if err := g.b.ctx.Err(); err != nil {
		return err
	}
	t := time.Now()
	g.b.logf("   pgnights: %s ...", what)
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	g.b.logf("   pgnights: %s done in %s", what, time.Since(t).Round(100*time.Millisecond))
	return nil
}

// sql runs statements in one session of the database, after setseed with
// a value derived from key: random() then draws the same numbers in every
// generation. Each statement is its own transaction (psql -c each).
func (g *nightsGen) sql(key int, stmts ...string) (string, error) {
	seed := float64((nightsSeed+key*7919)%20000)/10000 - 1 // in [-1, 1)
	args := []string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", nightsDB,
		"-c", "SELECT setseed(" + strconv.FormatFloat(seed, 'f', 4, 64) + ")"}
	for _, s := range stmts {
		args = append(args, "-c", s)
	}
	out, err := g.s.ClientErr("psql", args...)
	return strings.TrimSpace(out), err
}

// fill replaces {name} in tmpl by the values of kv (name, value, ...).
func fill(tmpl string, kv ...any) string {
	pairs := make([]string, 0, len(kv))
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, "{"+fmt.Sprint(kv[i])+"}", fmt.Sprint(kv[i+1]))
	}
	return strings.NewReplacer(pairs...).Replace(tmpl)
}

// pick is an SQL expression choosing one of the literals at random.
func pick(items ...string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return fmt.Sprintf("(ARRAY[%s])[1 + floor(random() * %d)::int]", strings.Join(q, ", "), len(items))
}

var (
	nightsUserAgents = pick("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
		"goauthentik.io/outpost/2025.8.1 (provider=ldap)", "curl/8.14.1")
	randomIP = "('10.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int)::inet"
	// userAttrs is a user's attributes (about 500 bytes): settings, what
	// an LDAP source synchronises, MFA state. g is the user's id, {until}
	// the end of the day the user is created on.
	userAttrs = fill(`jsonb_build_object(
  'settings', jsonb_build_object('locale', {locale}, 'theme', jsonb_build_object('base', {theme})),
  'goauthentik.io/user/sources', jsonb_build_array({source}),
  'goauthentik.io/user/can-change-username', random() < 0.1,
  'department', {dept}, 'title', {title},
  'employeeNumber', lpad(floor(random() * 1e7)::int::text, 8, '0'),
  'telephoneNumber', '+49 30 ' || lpad(floor(random() * 1e8)::int::text, 8, '0'),
  'distinguishedName', 'cn=u' || g || ',ou=people,dc=example,dc=com',
  'objectSid', 'S-1-5-21-' || floor(random() * 1e9)::bigint || '-' || floor(random() * 1e9)::bigint || '-' || g,
  'ldap_uniq', md5(random()::text),
  'mfa', jsonb_build_object('totp', random() < 0.6, 'webauthn', random() < 0.2, 'last_verified', to_timestamp({until}) - random() * interval '30 days'))`,
		"locale", pick("en", "de", "fr", "es", "nl", "pl", "ja", "pt-BR"), "theme", pick("automatic", "light", "dark"),
		"source", pick("ldap", "google", "github", "saml-okta"),
		"dept", pick("Engineering", "Sales", "Support", "Finance", "Marketing", "Operations", "Legal", "People"),
		"title", pick("Engineer", "Senior Engineer", "Manager", "Analyst", "Account Executive", "Designer", "Director", "Intern"))
)

// nightsSchema is the application's tables, shaped like authentik's
// authentik_core_user, authentik_events_event and
// authentik_core_authenticatedsession.
const nightsSchema = `CREATE TABLE users (
  id integer PRIMARY KEY, uuid uuid NOT NULL UNIQUE, username text NOT NULL UNIQUE, name text NOT NULL, email text NOT NULL,
  password text NOT NULL, is_active boolean NOT NULL, date_joined timestamptz NOT NULL, last_login timestamptz,
  password_change_date timestamptz NOT NULL, path text NOT NULL DEFAULT 'users', type text NOT NULL DEFAULT 'internal',
  attributes jsonb NOT NULL);
CREATE TABLE events (
  event_uuid uuid PRIMARY KEY, action text NOT NULL, app text NOT NULL, "user" jsonb NOT NULL, context jsonb NOT NULL,
  client_ip inet, created timestamptz NOT NULL, expires timestamptz NOT NULL, expiring boolean NOT NULL DEFAULT true,
  brand jsonb NOT NULL);
CREATE INDEX events_created ON events (created);
CREATE INDEX events_expires ON events (expires);
CREATE TABLE sessions (
  uuid uuid PRIMARY KEY, session_key text NOT NULL UNIQUE, user_id integer NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  last_ip inet NOT NULL, last_user_agent text NOT NULL, last_used timestamptz NOT NULL, expires timestamptz NOT NULL,
  data jsonb NOT NULL);
CREATE INDEX sessions_expires ON sessions (expires)`

// pgbenchRowsSQL fills pgbench's tables like pgbench -i -s {scale}, but
// with random filler (pgbench's blank filler compresses about 50:1,
// unlike real data) and without rewriting the tables afterwards.
const pgbenchRowsSQL = `INSERT INTO pgbench_branches (bid, bbalance, filler)
  SELECT b, 0, md5(random()::text) || md5(random()::text) FROM generate_series(1, {scale}) b;
INSERT INTO pgbench_tellers (tid, bid, tbalance, filler)
  SELECT t, (t - 1) / 10 + 1, 0, md5(random()::text) || md5(random()::text) FROM generate_series(1, 10 * {scale}) t;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
  SELECT a, (a - 1) / 100000 + 1, 0, md5(random()::text) || md5(random()::text) FROM generate_series(1, 100000 * {scale}) a`

// newUsersSQL appends {n} users after the highest id, joined between
// {from} and {until} (Unix seconds).
var newUsersSQL = fill(`INSERT INTO users (id, uuid, username, name, email, password, is_active, date_joined, last_login, password_change_date, attributes)
SELECT g, md5(random()::text)::uuid, lower(first) || '.' || lower(last) || g, first || ' ' || last,
  lower(first) || '.' || lower(last) || g || '@' || domain,
  'pbkdf2_sha256$600000$' || substr(md5(random()::text), 1, 22) || '$' || encode(sha256(random()::text::bytea), 'base64'),
  random() < 0.97, joined, joined + random() * (to_timestamp({until}) - joined), joined + random() * (to_timestamp({until}) - joined),
  {attrs}
FROM (SELECT g, {first} AS first, {last} AS last, {domain} AS domain, to_timestamp({from} + random() * ({until} - {from})) AS joined
  FROM generate_series((SELECT coalesce(max(id), 0) FROM users) + 1, (SELECT coalesce(max(id), 0) FROM users) + {n}) g) s`,
	"attrs", userAttrs,
	"first", pick("Anna", "Ben", "Clara", "David", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luca", "Mara", "Noah", "Olga", "Paul", "Rosa", "Sami", "Tara", "Yusuf"),
	"last", pick("Schmidt", "Meyer", "Novak", "Rossi", "Garcia", "Dubois", "Jansen", "Kowalski", "Silva", "Yilmaz", "Tanaka", "Nguyen", "Smith", "Berg", "Costa", "Horvat"),
	"domain", pick("example.com", "corp.example.com", "example.org"))

// nightsEventsSQL appends {n} events created in order between {from} and
// {until}, by random users among {users}, expiring {days} days later.
var nightsEventsSQL = fill(`INSERT INTO events (event_uuid, action, app, "user", context, client_ip, created, expires, brand)
SELECT md5(random()::text)::uuid, action, 'authentik.events.signals',
  jsonb_build_object('pk', u, 'email', 'u' || u || '@example.com', 'username', 'u' || u),
  jsonb_build_object(
    'http_request', jsonb_build_object('args', jsonb_build_object('next', {next}), 'path', {path}, 'method', {method},
      'request_id', md5(random()::text), 'user_agent', {ua}),
    'geo', jsonb_build_object('city', {city}, 'country', {country}, 'lat', round((random() * 180 - 90)::numeric, 4), 'long', round((random() * 360 - 180)::numeric, 4)),
    'asn', jsonb_build_object('asn', floor(random() * 65000)::int, 'as_org', {asorg}, 'network', '10.0.0.0/8'),
    'auth_method', {auth}, 'auth_method_args', jsonb_build_object('mfa_devices', floor(random() * 3)::int)),
  ip, created, created + interval '{days} days',
  '{"pk": "8a1b2c3d-0000-4000-8000-000000000001", "app": "authentik_brands", "name": "Default brand", "model_name": "brand"}'
FROM (SELECT to_timestamp({from} + (g - 1 + random()) * ({until} - {from}) / {n}::float8) AS created,
    1 + floor(random() * {users})::int AS u, {action} AS action, {ip} AS ip
  FROM generate_series(1, {n}) g) s`,
	"next", pick("/if/user/", "/if/admin/", "/application/o/authorize/", "/"),
	"path", pick("/api/v3/flows/executor/default-authentication-flow/", "/api/v3/core/users/me/", "/application/o/token/", "/api/v3/events/events/"),
	"method", pick("GET", "GET", "POST"), "ua", nightsUserAgents,
	"city", pick("Berlin", "Hamburg", "Munich", "Vienna", "Zurich", "Amsterdam", "Paris", "Warsaw"),
	"country", pick("DE", "DE", "AT", "CH", "NL", "FR", "PL"),
	"asorg", pick("Deutsche Telekom AG", "Vodafone GmbH", "Hetzner Online GmbH", "Amazon.com, Inc."),
	"auth", pick("password", "token", "auth_webauthn_pwl", "app_password"),
	"action", pick("login", "logout", "authorize_application", "token_refresh", "model_updated", "secret_view", "password_set", "login_failed"),
	"ip", randomIP)

// nightsSessionsSQL creates {n} sessions used last between {from} and {until}
// by random users among {users}, living one to nine days.
var nightsSessionsSQL = fill(`INSERT INTO sessions (uuid, session_key, user_id, last_ip, last_user_agent, last_used, expires, data)
SELECT md5(random()::text)::uuid, md5(random()::text) || substr(md5(random()::text), 1, 8), u, ip, ua, created,
  created + (1 + random() * 8) * interval '1 day',
  jsonb_build_object('_auth_user_id', u::text, '_auth_user_backend', 'authentik.core.auth.InbuiltBackend',
    '_auth_user_hash', encode(sha256(random()::text::bytea), 'hex'), 'authentik/stages/user_login/last_ip', host(ip),
    'authentik/flows/plan_context', jsonb_build_object('pending_user', u, 'flow', 'default-authentication-flow'), '_session_expiry', 777600)
FROM (SELECT to_timestamp({from} + random() * ({until} - {from})) AS created, 1 + floor(random() * {users})::int AS u, {ua} AS ua, {ip} AS ip
  FROM generate_series(1, {n}) g) s`, "ua", nightsUserAgents, "ip", randomIP)

// userUpdatesSQL is {n} logins of random users, all over the table,
// between {from} and {until}: last login, MFA state, the LDAP sync's
// marker, and for one in ten new settings.
var userUpdatesSQL = fill(`UPDATE users SET last_login = t,
  attributes = attributes || jsonb_build_object('ldap_uniq', md5(random()::text),
    'mfa', jsonb_build_object('totp', random() < 0.6, 'webauthn', random() < 0.2, 'last_verified', t),
    'settings', CASE WHEN random() < 0.1 THEN jsonb_build_object('locale', {locale}, 'theme', jsonb_build_object('base', {theme})) ELSE attributes->'settings' END)
FROM (SELECT id AS uid, to_timestamp({from} + random() * ({until} - {from})) AS t FROM users ORDER BY random() LIMIT {n}) pick
WHERE users.id = pick.uid`, "locale", pick("en", "de", "fr", "es", "nl", "pl", "ja", "pt-BR"), "theme", pick("automatic", "light", "dark"))

// sessionUpdatesSQL is {n} requests of random live sessions.
var sessionUpdatesSQL = fill(`UPDATE sessions SET last_used = t, last_ip = ip
FROM (SELECT uuid AS sid, to_timestamp({from} + random() * ({until} - {from})) AS t, {ip} AS ip FROM sessions ORDER BY random() LIMIT {n}) pick
WHERE sessions.uuid = pick.sid`, "ip", randomIP)

// tpcbScript is pgbench's built-in tpcb-like transaction, but with the
// history row's time drawn from the day instead of now(), so that the
// series does not depend on when it is generated.
const tpcbScript = `\set aid random(1, :naccounts)
\set bid random(1, :nbranches)
\set tid random(1, :ntellers)
\set delta random(-5000, 5000)
\set sec random(0, 86399)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, to_timestamp(:daystart + :sec));
END;
`

// genNights builds the database, then runs the days and saves each
// night's dump into dir. Autovacuum is off and each day ends with an
// explicit VACUUM ANALYZE (what autovacuum would do overnight): the
// physical order of the rows, which is the order of the dump, then
// depends only on the seeded changes.
func (b *bench) genNights(dir string) error {
	t0 := time.Now()
	p := b.prof.Nights
	s, stop, err := b.pgServer("autovacuum = off")
	if err != nil {
		return err
	}
	defer stop()
	g := &nightsGen{b: b, s: s, p: p, dir: dir}
	info := nightsInfo{Profile: p, Seed: nightsSeed, Generator: nightsGenerator}
	info.ServerVersion, _ = psql(s, "postgres", "SHOW server_version")
	if _, err := psql(s, "postgres", "CREATE DATABASE "+nightsDB); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	if err := g.initial(); err != nil {
		return err
	}
	info.InitialSeconds = time.Since(t0).Seconds()
	info.InitialDBBytes, info.InitialTables = g.sizes()
	b.logf("   pgnights: initial database %s (%s)", fmtBytes(info.InitialDBBytes), tableSizes(info.InitialTables))
	script := filepath.Join(dir, "tpcb-night.pgbench")
	if err := os.WriteFile(script, []byte(tpcbScript), 0o644); err != nil {
		return err
	}
	for n := 1; n <= p.Nights; n++ {
		ni, err := g.night(n, script)
		if err != nil {
			return fmt.Errorf("night %d: %w", n, err)
		}
		info.Nights = append(info.Nights, ni)
		b.logf("   pgnights: night %d/%d: database %s, dump %s (%s elapsed)", n, p.Nights, fmtBytes(ni.DBBytes), fmtBytes(ni.DumpBytes),
			time.Since(t0).Round(time.Second))
	}
	stop()
	info.GenerateSeconds = time.Since(t0).Seconds()
	return writeJSONFile(filepath.Join(dir, "info.json"), info)
}

// initial creates and fills the tables, as they stand before day 1.
func (g *nightsGen) initial() error {
	p := g.p
	first := nightTime(1).Add(-24 * time.Hour).Unix() // the start of day 1
	if err := g.step(fmt.Sprintf("pgbench tables, scale %d, random filler", p.Scale), func() error {
		if _, err := g.s.ClientErr("pgbench", "-i", "-q", "-I", "dt", "-s", strconv.Itoa(p.Scale), nightsDB); err != nil {
			return err
		}
		if _, err := g.sql(1, fill(pgbenchRowsSQL, "scale", p.Scale)); err != nil {
			return err
		}
		_, err := g.s.ClientErr("pgbench", "-i", "-q", "-I", "p", nightsDB)
		return err
	}); err != nil {
		return err
	}
	if err := g.step(fmt.Sprintf("users, events and sessions tables: %d users, %d events, %d sessions", p.Users, p.Events, 9*p.SessionsPerDay), func() error {
		days := p.retentionDays()
		_, err := g.sql(2, nightsSchema,
			fill(newUsersSQL, "n", p.Users, "from", first-3*365*86400, "until", first),
			fill(nightsEventsSQL, "n", p.Events, "from", first-int64(days)*86400, "until", first, "users", p.Users, "days", days),
			fill(nightsSessionsSQL, "n", 9*p.SessionsPerDay, "from", first-9*86400, "until", first, "users", p.Users),
			fmt.Sprintf("DELETE FROM sessions WHERE expires < to_timestamp(%d)", first))
		return err
	}); err != nil {
		return err
	}
	return g.step("VACUUM FREEZE ANALYZE", func() error { _, err := g.sql(3, "VACUUM FREEZE ANALYZE"); return err })
}

// night runs day n's changes, then dumps the database.
func (g *nightsGen) night(n int, script string) (nightInfo, error) {
	p := g.p
	end := nightTime(n)
	from, until := end.Add(-24*time.Hour).Unix(), end.Unix()
	ni := nightInfo{Night: n, File: nightFile(n), Time: end}
	t := time.Now()
	what := fmt.Sprintf("day %d/%d: %d pgbench transactions, %d user logins, %d new users, %d events appended and the expired deleted, %d sessions created, %d used and the expired deleted",
		n, p.Nights, p.Transactions, p.UserUpdates, p.NewUsers, p.EventsPerDay, p.SessionsPerDay, p.SessionUpdates)
	if err := g.step(what, func() error {
		if _, err := g.s.ClientErr("pgbench", "-n", "-c", "1", "-j", "1", "-t", strconv.Itoa(p.Transactions),
			"--random-seed", strconv.Itoa(nightsSeed+n), "-f", script,
			"-D", fmt.Sprintf("naccounts=%d", 100000*p.Scale), "-D", fmt.Sprintf("ntellers=%d", 10*p.Scale),
			"-D", fmt.Sprintf("nbranches=%d", p.Scale), "-D", fmt.Sprintf("daystart=%d", from), nightsDB); err != nil {
			return fmt.Errorf("pgbench: %w", err)
		}
		users := p.Users + (n-1)*p.NewUsers // before today's
		_, err := g.sql(100+n,
			fill(userUpdatesSQL, "n", p.UserUpdates, "from", from, "until", until),
			fill(newUsersSQL, "n", p.NewUsers, "from", from, "until", until),
			fill(nightsEventsSQL, "n", p.EventsPerDay, "from", from, "until", until, "users", users, "days", p.retentionDays()),
			fmt.Sprintf("DELETE FROM events WHERE expires < to_timestamp(%d)", until),
			fill(nightsSessionsSQL, "n", p.SessionsPerDay, "from", from, "until", until, "users", users),
			fill(sessionUpdatesSQL, "n", p.SessionUpdates, "from", from, "until", until),
			fmt.Sprintf("DELETE FROM sessions WHERE expires < to_timestamp(%d)", until))
		if err != nil {
			return err
		}
		_, err = g.sql(200+n, "VACUUM ANALYZE")
		return err
	}); err != nil {
		return ni, err
	}
	ni.DaySeconds = time.Since(t).Seconds()
	ni.DBBytes, _ = g.sizes()
	ni.Rows = g.rowCounts()
	path := filepath.Join(g.dir, ni.File)
	t = time.Now()
	if err := g.step(fmt.Sprintf("pg_dump -Fc -Z0 night %d", n), func() error {
		_, err := g.s.ClientErr("pg_dump", "-Fc", "-Z0", "-f", path, nightsDB)
		return err
	}); err != nil {
		return ni, err
	}
	ni.DumpSeconds = time.Since(t).Seconds()
	ni.DumpBytes = fileSize(path)
	var err error
	if ni.SHA256, err = sha256File(path); err != nil {
		return ni, err
	}
	return ni, nil
}

// nightsTables are the tables of the database, for sizes and row counts.
var nightsTables = []string{"pgbench_accounts", "pgbench_tellers", "pgbench_branches", "pgbench_history", "users", "events", "sessions"}

// sizes returns the database's size and each table's with its indexes.
func (g *nightsGen) sizes() (int64, map[string]int64) {
	out, err := psql(g.s, nightsDB, "SELECT pg_database_size(current_database())")
	if err != nil {
		return 0, nil
	}
	db, _ := strconv.ParseInt(out, 10, 64)
	tables := map[string]int64{}
	for _, t := range nightsTables {
		if out, err := psql(g.s, nightsDB, fmt.Sprintf("SELECT pg_total_relation_size('%s')", t)); err == nil {
			tables[t], _ = strconv.ParseInt(out, 10, 64)
		}
	}
	return db, tables
}

// rowCounts counts the rows of the tables a day changes in number.
func (g *nightsGen) rowCounts() map[string]int64 {
	rows := map[string]int64{}
	for _, t := range []string{"users", "events", "sessions", "pgbench_history"} {
		if out, err := psql(g.s, nightsDB, "SELECT count(*) FROM "+t); err == nil {
			rows[t], _ = strconv.ParseInt(out, 10, 64)
		}
	}
	return rows
}

func tableSizes(m map[string]int64) string {
	var parts []string
	for _, t := range nightsTables {
		if n, ok := m[t]; ok {
			parts = append(parts, t+" "+fmtBytes(n))
		}
	}
	return strings.Join(parts, ", ")
}

// Phase names of the pgnights rows.
func nightBackupPhase(n int) string  { return fmt.Sprintf("night %d backup", n) }
func nightRestorePhase(n int) string { return fmt.Sprintf("night %d restore (dump)", n) }

// runPGNights backs up every night's dump with both tools, in order, then
// restores the last night and a middle one with dump and checks them.
func (b *bench) runPGNights() error {
	dir, info, err := b.nightsCorpus()
	if err != nil {
		return err
	}
	b.res.Datasets[nightsDataset] = info
	b.res.Notes = append(b.res.Notes, "pgnights: each tool backs up the nights in order into one repository, from the cached dump files through standard input; "+
		"the restores dump the night's own snapshot (not latest) and compare its sha256 with the source's.")
	nights := info.Nights
	b.logf("   pgnights: %d nights of %s (%s); dumps of %s to %s; generated in %s", len(nights), nightsDB,
		fmtBytes(nights[len(nights)-1].DBBytes), fmtBytes(nights[0].DumpBytes), fmtBytes(nights[len(nights)-1].DumpBytes),
		time.Duration(info.GenerateSeconds*float64(time.Second)).Round(time.Second))
	c, r, err := b.newRepos(nightsDataset)
	if err != nil {
		return err
	}
	backup := func(repo *repoT, file string) inv {
		return inv{repo: repo, args: []string{"--json", "backup", "--stdin", "--stdin-filename", nightsFile}, stdin: file,
			input: fileSize(file), backup: true}
	}
	// snaps[n] are night n's snapshots of cairn and restic.
	snaps := make([][2]string, len(nights)+1)
	for _, ni := range nights {
		file := filepath.Join(dir, ni.File)
		// Only the night at hand: all of them may not fit the page cache.
		warm(file)
		row, err := b.pair(nightsDataset, nightBackupPhase(ni.Night), backup(c, file), backup(r, file))
		if err != nil {
			return err
		}
		snaps[ni.Night] = [2]string{row.Cairn.SnapshotID, row.Restic.SnapshotID}
		if snaps[ni.Night][0] == "" || snaps[ni.Night][1] == "" {
			return fmt.Errorf("night %d: no snapshot ID in the backup summaries (cairn %q, restic %q)", ni.Night, snaps[ni.Night][0], snaps[ni.Night][1])
		}
	}
	if err := b.nightsCopy(c, r, len(nights)); err != nil {
		return err
	}
	last, mid := len(nights), len(nights)/2
	for _, n := range []int{last, mid} {
		ni := nights[n-1]
		restore := func(repo *repoT, snap string) inv {
			out := filepath.Join(b.work, nightsDataset, fmt.Sprintf("restore-%s-%s", repo.tool, ni.File))
			return inv{repo: repo, args: []string{"dump", snap, "/" + nightsFile}, stdout: out, input: ni.DumpBytes,
				check: func() error { defer os.Remove(out); return checkSHA256(out, ni) }}
		}
		if err := os.MkdirAll(filepath.Join(b.work, nightsDataset), 0o755); err != nil {
			return err
		}
		if _, err := b.pair(nightsDataset, nightRestorePhase(n), restore(c, snaps[n][0]), restore(r, snaps[n][1])); err != nil {
			return err
		}
	}
	return nil
}

// checkSHA256 compares a restored dump with the night's source.
func checkSHA256(p string, ni nightInfo) error {
	got, err := sha256File(p)
	if err != nil {
		return err
	}
	if got != ni.SHA256 {
		return fmt.Errorf("restored %s (%d bytes) has sha256 %s, want %s (%s, %d bytes)", p, fileSize(p), got, ni.SHA256, ni.File, ni.DumpBytes)
	}
	return nil
}

// Phase name of the offsite copy row.
const nightsCopyPhase = "copy all nights to S3"

// nightsCopy copies each tool's repository of the series to a new one on
// MinIO behind the latency proxy (cairn copy into a repository made with
// init --from-repo; restic copy into one made with --copy-chunker-params),
// and counts the requests and bytes.
func (b *bench) nightsCopy(c, r *repoT, nights int) error {
	e, err := b.startS3()
	if err != nil {
		return err
	}
	defer e.stop()
	cacheDir := filepath.Join(b.work, nightsDataset, "copy-cache")
	cd, rd := b.s3Repo(e, "cairn", cacheDir+"-cairn"), b.s3Repo(e, "restic", cacheDir+"-restic")
	cd.env = append(cd.env, "CAIRN_FROM_PASSWORD="+password)
	rd.env = append(rd.env, "RESTIC_FROM_PASSWORD="+password)
	for _, x := range []struct {
		repo *repoT
		args []string
	}{{cd, []string{"init", "--from-repo", c.dir}}, {rd, []string{"init", "--from-repo", r.dir, "--copy-chunker-params"}}} {
		cmd := exec.CommandContext(b.ctx, x.repo.bin, x.repo.cmdArgs(x.args...)...)
		cmd.Env = b.environ(x.repo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s init on S3: %v: %s", x.repo.tool, err, bytes.TrimSpace(out))
		}
	}
	b.res.Notes = append(b.res.Notes, fmt.Sprintf("pgnights: %q copies each tool's repository of all %d nights to a new repository on MinIO behind the latency proxy "+
		"(cairn copy into one made with init --from-repo, restic copy into one made with init --copy-chunker-params); repo is the bucket's size afterwards", nightsCopyPhase, nights))
	row, err := b.pair(nightsDataset, nightsCopyPhase,
		inv{repo: cd, args: []string{"copy", "--from-repo", c.dir}, input: c.bytes()},
		inv{repo: rd, args: []string{"copy", "--from-repo", r.dir}, input: r.bytes()})
	if err != nil {
		return err
	}
	b.logf("   pgnights: copied %s (cairn) and %s (restic) to S3", fmtBytes(row.Cairn.RepoBytes), fmtBytes(row.Restic.RepoBytes))
	return nil
}
