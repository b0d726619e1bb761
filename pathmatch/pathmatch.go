// Package pathmatch matches snapshot and file system paths against
// include/exclude patterns, with restic's rules: a pattern without a slash
// matches any single path component ("*.log", "node_modules"); a pattern
// with a slash matches the whole path from the start ("/var/cache/*") or,
// when it does not start with a slash, any trailing part of it; "**" matches
// any number of components. A pattern that matches a directory matches
// everything below it.
package pathmatch

import (
	"fmt"
	"path"
	"strings"
)

// Pattern is one compiled pattern.
type Pattern struct {
	parts    []string
	anchored bool
}

// Parse compiles a pattern, rejecting malformed globs.
func Parse(p string) (Pattern, error) {
	if p == "" {
		return Pattern{}, fmt.Errorf("empty pattern")
	}
	pat := Pattern{anchored: strings.HasPrefix(p, "/")}
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		if _, err := path.Match(part, ""); err != nil {
			return Pattern{}, fmt.Errorf("invalid pattern %q: %w", p, err)
		}
		pat.parts = append(pat.parts, part)
	}
	if len(pat.parts) == 0 {
		return Pattern{}, fmt.Errorf("pattern %q matches nothing", p)
	}
	if len(pat.parts) == 1 && !pat.anchored {
		// A bare name matches a component anywhere.
		pat.parts = []string{"**", pat.parts[0]}
		pat.anchored = true
	}
	return pat, nil
}

// Match reports whether the slash-separated absolute path p, or one of its
// parent directories, matches.
func (pt Pattern) Match(p string) bool {
	comps := strings.Split(strings.Trim(p, "/"), "/")
	if p == "/" {
		comps = nil
	}
	if pt.anchored {
		return matchPrefix(pt.parts, comps)
	}
	for i := range comps {
		if matchPrefix(pt.parts, comps[i:]) {
			return true
		}
	}
	return false
}

// MatchPrefix reports whether p could be a parent of a path that matches,
// used by restore --include to descend into directories.
func (pt Pattern) MatchPrefix(p string) bool {
	comps := strings.Split(strings.Trim(p, "/"), "/")
	if p == "/" {
		return true
	}
	if !pt.anchored {
		return true
	}
	return couldMatch(pt.parts, comps)
}

// matchPrefix: do the pattern parts match a leading run of comps?
func matchPrefix(parts, comps []string) bool {
	if len(parts) == 0 {
		return true // everything below a matched directory matches
	}
	if parts[0] == "**" {
		for i := 0; i <= len(comps); i++ {
			if matchPrefix(parts[1:], comps[i:]) {
				return true
			}
		}
		return false
	}
	if len(comps) == 0 {
		return false
	}
	if ok, _ := path.Match(parts[0], comps[0]); !ok {
		return false
	}
	return matchPrefix(parts[1:], comps[1:])
}

// couldMatch: are comps consistent with the start of a match?
func couldMatch(parts, comps []string) bool {
	if len(comps) == 0 || len(parts) == 0 {
		return true
	}
	if parts[0] == "**" {
		return true
	}
	if ok, _ := path.Match(parts[0], comps[0]); !ok {
		return false
	}
	return couldMatch(parts[1:], comps[1:])
}

// List is a set of patterns; it matches when any pattern does.
type List []Pattern

// ParseList compiles patterns.
func ParseList(ps []string) (List, error) {
	var l List
	for _, p := range ps {
		pt, err := Parse(p)
		if err != nil {
			return nil, err
		}
		l = append(l, pt)
	}
	return l, nil
}

// Match reports whether any pattern matches p.
func (l List) Match(p string) bool {
	for _, pt := range l {
		if pt.Match(p) {
			return true
		}
	}
	return false
}

// MatchPrefix reports whether any pattern could match below p.
func (l List) MatchPrefix(p string) bool {
	for _, pt := range l {
		if pt.MatchPrefix(p) {
			return true
		}
	}
	return false
}
