package procenv

import (
	"strings"
	"testing"
)

func TestChildHasNoSecrets(t *testing.T) {
	t.Setenv("CAIRN_PASSWORD", "repo-secret")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
	t.Setenv("CAIRN_REDIS_PASSWORD", "redis-secret")
	t.Setenv("PGPASSWORD", "pg-password")
	t.Setenv("HOME_LIKE", "kept")
	env := strings.Join(Child(), "\n")
	if strings.Contains(env, "secret") || !strings.Contains(env, "PGPASSWORD=pg-password") || !strings.Contains(env, "HOME_LIKE=kept") {
		t.Fatalf("child environment:\n%s", env)
	}
}
