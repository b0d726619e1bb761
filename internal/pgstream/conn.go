// Package pgstream is cairn's PostgreSQL source: it runs pg_dump inside an
// exported snapshot whose per-table row counts it records, and restores a
// stored dump with pg_restore or psql, proving the result by those counts.
package pgstream

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/cairn-backup/cairn/internal/procenv"
	"github.com/jackc/pgx/v5"
)

// ConnInfo is a parsed connection string (libpq keywords and values). It is
// handed to client programs as PG* environment variables, never as a
// command-line argument, so a password cannot be seen in ps.
type ConnInfo struct {
	params map[string]string
}

// envNames maps libpq keywords to the environment variables libpq reads.
var envNames = map[string]string{
	"host":                     "PGHOST",
	"hostaddr":                 "PGHOSTADDR",
	"port":                     "PGPORT",
	"dbname":                   "PGDATABASE",
	"user":                     "PGUSER",
	"password":                 "PGPASSWORD",
	"passfile":                 "PGPASSFILE",
	"service":                  "PGSERVICE",
	"servicefile":              "PGSERVICEFILE",
	"options":                  "PGOPTIONS",
	"application_name":         "PGAPPNAME",
	"sslmode":                  "PGSSLMODE",
	"sslcert":                  "PGSSLCERT",
	"sslkey":                   "PGSSLKEY",
	"sslrootcert":              "PGSSLROOTCERT",
	"sslcrl":                   "PGSSLCRL",
	"sslcrldir":                "PGSSLCRLDIR",
	"sslsni":                   "PGSSLSNI",
	"requiressl":               "PGREQUIRESSL",
	"sslcompression":           "PGSSLCOMPRESSION",
	"ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
	"ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
	"gssencmode":               "PGGSSENCMODE",
	"krbsrvname":               "PGKRBSRVNAME",
	"gsslib":                   "PGGSSLIB",
	"connect_timeout":          "PGCONNECT_TIMEOUT",
	"client_encoding":          "PGCLIENTENCODING",
	"target_session_attrs":     "PGTARGETSESSIONATTRS",
	"channel_binding":          "PGCHANNELBINDING",
	"require_auth":             "PGREQUIREAUTH",
	"load_balance_hosts":       "PGLOADBALANCEHOSTS",
}

// pgxKeys are the keywords passed on to pgx for cairn's own connection.
var pgxKeys = []string{
	"host", "port", "dbname", "user", "password", "passfile", "service", "servicefile",
	"options", "application_name", "sslmode", "sslcert", "sslkey", "sslrootcert", "sslsni",
	"krbsrvname", "connect_timeout", "client_encoding", "target_session_attrs",
	"channel_binding", "require_auth",
}

// ParseConn parses a PostgreSQL URL (postgres:// or postgresql://, as libpq
// accepts them: several hosts, percent-encoded socket directories, query
// parameters) or a keyword/value string ("host=... dbname=...").
func ParseConn(s string) (*ConnInfo, error) {
	var params map[string]string
	var err error
	switch {
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		params, err = parseURL(s)
	case strings.Contains(s, "="):
		params, err = parseKeywords(s)
	default:
		return nil, fmt.Errorf("PostgreSQL connection %q: want a postgres:// URL or key=value pairs", redactString(s))
	}
	if err != nil {
		return nil, err
	}
	for k := range params {
		if _, ok := envNames[k]; !ok {
			return nil, fmt.Errorf("PostgreSQL connection: unsupported parameter %q", k)
		}
	}
	return &ConnInfo{params: params}, nil
}

func parseURL(s string) (map[string]string, error) {
	bad := func(what string) error {
		return fmt.Errorf("PostgreSQL URL %s: invalid %s", redactString(s), what)
	}
	p := map[string]string{}
	rest := s[strings.Index(s, "://")+3:]
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest = rest[:i]
	}
	query := ""
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, query = rest[:i], rest[i+1:]
	}
	authority, dbname := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, dbname = rest[:i], rest[i+1:]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo := authority[:i]
		authority = authority[i+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		u, err := url.PathUnescape(user)
		if err != nil {
			return nil, bad("user name")
		}
		if u != "" {
			p["user"] = u
		}
		if hasPass {
			pw, err := url.PathUnescape(pass)
			if err != nil {
				return nil, bad("password encoding")
			}
			p["password"] = pw
		}
	}
	if authority != "" {
		var hosts, ports []string
		anyPort := false
		for _, hp := range strings.Split(authority, ",") {
			host, port := hp, ""
			if strings.HasPrefix(hp, "[") {
				end := strings.IndexByte(hp, ']')
				if end < 0 {
					return nil, bad("IPv6 host")
				}
				host, port = hp[1:end], strings.TrimPrefix(hp[end+1:], ":")
			} else if i := strings.LastIndexByte(hp, ':'); i >= 0 {
				host, port = hp[:i], hp[i+1:]
			}
			h, err := url.PathUnescape(host)
			if err != nil {
				return nil, bad("host")
			}
			for _, c := range port {
				if c < '0' || c > '9' {
					return nil, bad("port")
				}
			}
			if port != "" {
				anyPort = true
			}
			hosts = append(hosts, h)
			ports = append(ports, port)
		}
		if strings.Join(hosts, "") != "" {
			p["host"] = strings.Join(hosts, ",")
		}
		if anyPort {
			p["port"] = strings.Join(ports, ",")
		}
	}
	if dbname != "" {
		d, err := url.PathUnescape(dbname)
		if err != nil {
			return nil, bad("database name")
		}
		p["dbname"] = d
	}
	if query != "" {
		for _, kv := range strings.Split(query, "&") {
			if kv == "" {
				continue
			}
			k, v, _ := strings.Cut(kv, "=")
			k, err1 := url.QueryUnescape(k)
			v, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				return nil, bad("query parameter")
			}
			if k == "ssl" && v == "true" { // libpq's alias
				k, v = "sslmode", "require"
			}
			p[k] = v
		}
	}
	return p, nil
}

func parseKeywords(s string) (map[string]string, error) {
	p := map[string]string{}
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return p, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		key := s[start:i]
		skip()
		if i >= len(s) || s[i] != '=' || key == "" {
			return nil, fmt.Errorf("PostgreSQL connection string: missing \"=\" after %q", key)
		}
		i++
		skip()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					val.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("PostgreSQL connection string: unterminated quoted value of %q", key)
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		p[key] = val.String()
	}
}

// Get returns a parameter given in the connection string.
func (c *ConnInfo) Get(key string) string { return c.params[key] }

// Database is the database named by the connection string or PGDATABASE;
// empty when neither names one (the server then uses the user name).
func (c *ConnInfo) Database() string {
	if d := c.params["dbname"]; d != "" {
		return d
	}
	return os.Getenv("PGDATABASE")
}

// WithDatabase returns a copy connecting to another database.
func (c *ConnInfo) WithDatabase(db string) *ConnInfo {
	p := make(map[string]string, len(c.params)+1)
	for k, v := range c.params {
		p[k] = v
	}
	p["dbname"] = db
	return &ConnInfo{params: p}
}

// password is the password from the connection string or PGPASSWORD.
func (c *ConnInfo) password() string {
	if pw, ok := c.params["password"]; ok {
		return pw
	}
	return os.Getenv("PGPASSWORD")
}

// Env returns the environment for a client program: this process's
// environment without cairn's own secrets (procenv), with the connection's
// parameters as PG* variables. The
// password travels here (PGPASSWORD), never on the command line.
func (c *ConnInfo) Env() []string {
	set := map[string]string{}
	for k, v := range c.params {
		set[envNames[k]] = v
	}
	var env []string
	for _, kv := range procenv.Child() {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := set[name]; ok {
			continue
		}
		env = append(env, kv)
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		env = append(env, n+"="+set[n])
	}
	return env
}

// String is the connection without its password, for messages and metadata.
func (c *ConnInfo) String() string {
	var b strings.Builder
	b.WriteString("postgresql://")
	if u := c.params["user"]; u != "" {
		b.WriteString(url.PathEscape(u))
		if _, ok := c.params["password"]; ok {
			b.WriteString(":xxxxx")
		}
		b.WriteByte('@')
	}
	hosts := strings.Split(c.params["host"], ",")
	ports := strings.Split(c.params["port"], ",")
	for i, h := range hosts {
		if i > 0 {
			b.WriteByte(',')
		}
		if strings.Contains(h, ":") {
			h = "[" + h + "]"
		} else {
			h = strings.ReplaceAll(url.PathEscape(h), ":", "%3A")
		}
		b.WriteString(h)
		port := ports[len(ports)-1]
		if i < len(ports) {
			port = ports[i]
		}
		if port != "" {
			b.WriteString(":" + port)
		}
	}
	b.WriteString("/" + url.PathEscape(c.params["dbname"]))
	var keys []string
	for k := range c.params {
		switch k {
		case "host", "port", "user", "password", "dbname":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(k) + "=" + url.QueryEscape(c.params[k]))
	}
	return b.String()
}

// Redact removes the connection's password from a message (a client
// program's stderr, a driver error) before it is shown or stored.
func (c *ConnInfo) Redact(msg string) string {
	if pw := c.password(); len(pw) >= 4 {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
		if esc := url.QueryEscape(pw); esc != pw {
			msg = strings.ReplaceAll(msg, esc, "xxxxx")
		}
	}
	return msg
}

// redactString hides the password of a connection string that could not be
// parsed, for its error message.
func redactString(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		end := len(rest)
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			end = j
		}
		if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
			if c := strings.IndexByte(rest[:at], ':'); c >= 0 {
				s = s[:i+3] + rest[:c] + ":xxxxx" + rest[at:]
			}
		}
	}
	if i := strings.Index(s, "password="); i >= 0 {
		s = s[:i] + "password=xxxxx"
	}
	return s
}

// connect opens cairn's own connection with the same parameters and
// environment defaults the client programs see.
func (c *ConnInfo) connect(ctx context.Context) (*pgx.Conn, error) {
	var parts []string
	for _, k := range pgxKeys {
		if v, ok := c.params[k]; ok {
			parts = append(parts, k+"="+quoteValue(v))
		}
	}
	if _, ok := c.params["host"]; !ok {
		if a, ok := c.params["hostaddr"]; ok {
			parts = append(parts, "host="+quoteValue(a))
		}
	}
	cfg, err := pgx.ParseConfig(strings.Join(parts, " "))
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL connection %s: %s", c, c.Redact(err.Error()))
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %s", c, c.Redact(err.Error()))
	}
	return conn, nil
}

// quoteValue quotes a keyword/value connection string value.
func quoteValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// dbnameArg is a -d argument naming only the database, as a connection
// string so that a name containing "=" is not taken for one; everything
// else (and the password) comes from the environment.
func dbnameArg(db string) string { return "dbname=" + quoteValue(db) }
