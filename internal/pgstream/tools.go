package pgstream

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Tools locates the PostgreSQL client programs: in Dir when set (--pg-bin
// or CAIRN_PG_BIN), otherwise on PATH.
type Tools struct {
	Dir string
}

// Path returns the program's path or an error saying where it was looked for.
func (t Tools) Path(name string) (string, error) {
	if t.Dir != "" {
		p := filepath.Join(t.Dir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s not found in %s (--pg-bin / CAIRN_PG_BIN)", name, t.Dir)
		}
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH: install the PostgreSQL client programs or give their directory with --pg-bin (or CAIRN_PG_BIN)", name)
	}
	return p, nil
}

// Version is a PostgreSQL version as its programs and servers report it.
type Version struct {
	Text string // "15.18", as printed
	// Num is comparable across releases: major*10000 + minor for 10 and
	// later (150018), 9.6.24 -> 90624, as server_version_num.
	Num int
}

// Major is the release that must match: 15 for 15.18, 9.6 for 9.6.24.
func (v Version) Major() string {
	if v.Num >= 100000 {
		return strconv.Itoa(v.Num / 10000)
	}
	return fmt.Sprintf("%d.%d", v.Num/10000, v.Num/100%100)
}

func (v Version) majorNum() int {
	if v.Num >= 100000 {
		return v.Num / 10000 * 100
	}
	return v.Num / 100
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?(?:\.(\d+))?(\S*)`)

// parseToolVersion reads the output of "pg_dump --version".
func parseToolVersion(out string) (Version, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return Version{}, fmt.Errorf("unrecognised version output %q", strings.TrimSpace(out))
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	patch, _ := strconv.Atoi(m[3])
	text := m[1]
	if m[2] != "" {
		text += "." + m[2]
	}
	if m[3] != "" {
		text += "." + m[3]
	}
	text += m[4]
	if major >= 10 {
		return Version{Text: text, Num: major*10000 + minor}, nil
	}
	return Version{Text: text, Num: major*10000 + minor*100 + patch}, nil
}

var versionCache sync.Map // path -> Version

// toolVersion runs "PROGRAM --version".
func toolVersion(ctx context.Context, path string) (Version, error) {
	if v, ok := versionCache.Load(path); ok {
		return v.(Version), nil
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", path, err)
	}
	v, err := parseToolVersion(string(out))
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", path, err)
	}
	versionCache.Store(path, v)
	return v, nil
}

// checkToolVersion refuses a client program older than the server (pg_dump
// cannot dump a newer server) or than the program that wrote a dump
// (pg_restore cannot read a newer archive).
func checkToolVersion(ctx context.Context, t Tools, name string, need Version, needWhat string) (string, Version, error) {
	path, err := t.Path(name)
	if err != nil {
		return "", Version{}, err
	}
	v, err := toolVersion(ctx, path)
	if err != nil {
		return "", Version{}, err
	}
	if need.Num != 0 && v.majorNum() < need.majorNum() {
		msg := fmt.Sprintf("%s %s (%s) is older than %s: %s %s or newer is needed; install it and give its directory with --pg-bin (or CAIRN_PG_BIN)",
			name, v.Text, path, needWhat, name, need.Major())
		if others := installedVersions(name); len(others) > 0 {
			msg += "; found " + strings.Join(others, ", ")
		}
		return "", Version{}, fmt.Errorf("%s", msg)
	}
	return path, v, nil
}

// installedVersions lists the Debian-style installations of a program
// (/usr/lib/postgresql/N/bin), as a hint.
func installedVersions(name string) []string {
	ms, _ := filepath.Glob(filepath.Join("/usr/lib/postgresql", "*", "bin", name))
	sort.Strings(ms)
	return ms
}
