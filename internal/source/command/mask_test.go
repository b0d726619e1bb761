package command

import (
	"strings"
	"testing"
)

func TestMaskArgs(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"mysqldump", "-pS3cret", "-u", "root", "app"}, "mysqldump -p*** -u root app"},
		{[]string{"/usr/bin/mariadb-dump", "--password=S3cret", "app"}, "/usr/bin/mariadb-dump --password=*** app"},
		{[]string{"tool", "--password", "S3cret", "--verbose"}, "tool --password *** --verbose"},
		{[]string{"tool", "--api-key", "S3cret"}, "tool --api-key ***"},
		{[]string{"tool", "-token=S3cret"}, "tool -token=***"},
		{[]string{"env", "PGPASSWORD=S3cret", "pg_dump", "-Fc", "app"}, "env PGPASSWORD=*** pg_dump -Fc app"},
		{[]string{"pg_dump", "-Fc", "postgres://app:S3cret@db:5432/app"}, "pg_dump -Fc postgres://app:***@db:5432/app"},
		{[]string{"pg_dump", "--dbname=postgresql://app:S3cret@db/app"}, "pg_dump --dbname=postgresql://app:***@db/app"},
		{[]string{"sh", "-c", "mysqldump -pS3cret app | gzip"}, "sh -c mysqldump -p*** app | gzip"},
		{[]string{"sh", "-c", "PGPASSWORD=S3cret pg_dump --password 'S3cret' app"}, "sh -c PGPASSWORD=*** pg_dump --password *** app"},
		{[]string{"redis-cli", "-u", "redis://:S3cret@cache:6379", "--rdb", "-"}, "redis-cli -u redis://:***@cache:6379 --rdb -"},
		{[]string{"tool", "x://user:S3c%ret@host"}, "tool x://***@host"},
		// Not secrets: -p is the port for PostgreSQL tools; a URL without
		// a password; options that take no value.
		{[]string{"pg_dump", "-p", "5432", "-Fc", "app"}, "pg_dump -p 5432 -Fc app"},
		{[]string{"pg_dump", "-p5432", "app"}, "pg_dump -p5432 app"},
		{[]string{"pg_dump", "postgres://app@db/app", "--no-password"}, "pg_dump postgres://app@db/app --no-password"},
		{[]string{"tar", "-cf", "-", "/data"}, "tar -cf - /data"},
		{[]string{"pg_dump", "--no-password", "app"}, "pg_dump --no-password app"},
		{[]string{"tool", "--password-file", "/run/pw", "db"}, "tool --password-file /run/pw db"},
	} {
		got := MaskArgs(c.argv)
		if got != c.want {
			t.Errorf("MaskArgs(%q) = %q, want %q", c.argv, got, c.want)
		}
		if strings.Contains(got, "S3c") {
			t.Errorf("MaskArgs(%q) = %q still shows the secret", c.argv, got)
		}
	}
}
