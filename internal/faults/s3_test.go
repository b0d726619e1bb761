package faults

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// s3Env is a repository in a bucket of a MinIO server started for the test.
func s3Env(t *testing.T, bucket string) *env {
	srv := s3test.StartT(t)
	e := newEnv(t, "s3:"+srv.URL()+"/"+bucket+"/repo")
	// One local cache for every run of the test: concurrent writers and
	// killed runs share it as hosts do.
	e.vars = append(e.vars, "AWS_ACCESS_KEY_ID="+srv.User, "AWS_SECRET_ACCESS_KEY="+srv.Password, "CAIRN_CACHE_DIR="+t.TempDir())
	return e
}

func TestKill9MinIO(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 11))
	e := s3Env(t, "kill9")
	e.must("init", "--pack-size", "1")
	killRuns(t, e, 10, filepath.Join(t.TempDir(), "src"), rng)
}

func TestConcurrentWritersMinIO(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 12))
	e := s3Env(t, "writers")
	e.must("init", "--pack-size", "1")
	dir := t.TempDir()
	concurrentWriters(t, e, 2, dir, rng)
	concurrentWriters(t, e, 4, dir, rng)
}
