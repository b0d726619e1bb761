package command

import (
	"net/url"
	"path/filepath"
	"strings"
)

// Masked is how a hidden secret reads in a stored or printed command line.
const Masked = "***"

// MaskArgs returns the command line argv as it is stored in the snapshot
// and printed in messages: the words joined by spaces, with what looks
// like a secret replaced by Masked. The rule (README, "Streams"):
//
//   - the value of an option whose name contains "pass", "pwd", "secret",
//     "token" or "key", given as --name=VALUE, -name=VALUE or as the next
//     argument (--password VALUE), except --no-... and ...file options;
//   - the value of a VAR=VALUE word whose name contains one of those
//     (env PGPASSWORD=... pg_dump);
//   - the password of a URL (postgres://user:PASSWORD@host/db);
//   - -pVALUE (the password joined to -p) for mysql and mariadb programs,
//     whose -p is the password.
//
// The words inside an argument (sh -c "mysqldump -pSECRET db") are masked
// by the same rule. It cannot know every program's options: a secret
// passed any other way is stored as given, so pass secrets through the
// environment or a file instead.
func MaskArgs(argv []string) string { return maskWords(argv) }

// maskWords masks a sequence of words; one that holds a command line of
// its own (sh -c "...") is masked as a sequence in turn.
func maskWords(words []string) string {
	out := make([]string, len(words))
	mysql, next := false, false
	for i, w := range words {
		switch {
		case next && !strings.HasPrefix(w, "-"):
			out[i], next = Masked, false
		case strings.ContainsAny(w, " \t\n"):
			out[i] = maskWords(strings.Fields(w))
		default:
			mysql = mysql || isMySQL(strings.Trim(w, `'"`))
			out[i], next = maskWord(w, mysql)
		}
	}
	return strings.Join(out, " ")
}

// maskWord masks one word; next reports that the word is an option whose
// value comes in the next one.
func maskWord(w string, mysql bool) (masked string, next bool) {
	quote := ""
	if n := len(w); n > 1 && (w[0] == '\'' || w[0] == '"') {
		quote = w[:1]
	}
	bare := strings.Trim(w, `'"`)
	if strings.HasPrefix(bare, "-") {
		name, value, hasValue := strings.Cut(strings.TrimLeft(bare, "-"), "=")
		if secretName(name) {
			if hasValue {
				return quote + bare[:len(bare)-len(value)] + Masked + quote, false
			}
			return w, true
		}
		if mysql && strings.HasPrefix(bare, "-p") && !strings.HasPrefix(bare, "--") && len(bare) > 2 {
			return quote + "-p" + Masked + quote, false
		}
		if hasValue {
			return quote + bare[:len(bare)-len(value)] + maskURL(value) + quote, false
		}
		return w, false
	}
	if name, value, ok := strings.Cut(bare, "="); ok && name != "" && !strings.ContainsAny(name, "/:") && secretName(name) && value != "" {
		return quote + name + "=" + Masked + quote, false
	}
	return quote + maskURL(bare) + quote, false
}

// secretName reports whether an option or variable name names a secret
// (not --no-password, which takes none, nor --password-file, a path).
func secretName(name string) bool {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, "no-") || strings.HasSuffix(n, "file") {
		return false
	}
	for _, s := range []string{"pass", "pwd", "secret", "token", "key"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// maskURL hides the password of a URL with one; anything else is
// returned as it is.
func maskURL(s string) string {
	if !strings.Contains(s, "://") || !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		// Unparsable: hide everything between the scheme and the '@'.
		scheme, rest, _ := strings.Cut(s, "://")
		at := strings.LastIndex(rest, "@")
		return scheme + "://" + Masked + rest[at:]
	}
	if _, has := u.User.Password(); !has {
		return s
	}
	u.User = url.UserPassword(u.User.Username(), Masked)
	return strings.Replace(u.String(), url.QueryEscape(Masked), Masked, 1)
}

func isMySQL(prog string) bool {
	base := filepath.Base(prog)
	return strings.HasPrefix(base, "mysql") || strings.HasPrefix(base, "mariadb")
}
