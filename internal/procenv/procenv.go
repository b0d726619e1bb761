// Package procenv builds the environment of the programs cairn starts
// (pg_dump, pg_restore, psql, a --stdin-from-command program): cairn's own
// environment without the secrets cairn was given for itself (the
// repository password, the S3 keys, the Redis password), which those
// programs have no use for.
package procenv

import (
	"os"
	"strings"
)

// secret reports whether an environment variable holds a credential meant
// for cairn only.
func secret(name string) bool {
	switch name {
	case "CAIRN_PASSWORD", "CAIRN_NEW_PASSWORD", "CAIRN_REDIS_PASSWORD",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN":
		return true
	}
	return false
}

// Child returns this process's environment without cairn's secrets.
// PostgreSQL's own variables (PGPASSWORD, PGPASSFILE) stay: the PostgreSQL
// tools need them.
func Child() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !secret(name) {
			env = append(env, kv)
		}
	}
	return env
}
