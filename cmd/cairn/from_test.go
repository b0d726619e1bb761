package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/s3"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
	"github.com/cairn-backup/cairn/tree"
)

// TestInitFromRepo: a repository made with init --from-repo (here from one
// on MinIO, reached with the CAIRN_FROM_ credentials while AWS_* are
// wrong) stores the same files as the same trees: same chunking, same blob
// IDs, keys of its own. A wrong source password is exit 12.
func TestInitFromRepo(t *testing.T) {
	srv := s3test.StartT(t)
	base := t.TempDir()
	srcData := filepath.Join(base, "data")
	writeFile(t, filepath.Join(srcData, "big.bin"), randomBytes(21, 3<<20), 0o644)
	writeFile(t, filepath.Join(srcData, "small.txt"), []byte("same in both\n"), 0o644)

	src := newCLI(t, "s3:"+srv.URL()+"/cairn-from/src")
	src.password = "source password"
	src.env = []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password}
	src.init("--pack-size", "1")
	src.ok("backup", srcData)

	dst := newCLI(t, filepath.Join(base, "dst"))
	dst.env = []string{"AWS_ACCESS_KEY_ID=wrong", "AWS_SECRET_ACCESS_KEY=wrong",
		"CAIRN_FROM_AWS_ACCESS_KEY_ID=" + srv.User, "CAIRN_FROM_AWS_SECRET_ACCESS_KEY=" + srv.Password}
	bad := *dst
	bad.env = append(bad.env, "CAIRN_FROM_PASSWORD=not it")
	if res := bad.run("init", "--from-repo", src.repo); res.code != 12 {
		t.Fatalf("init --from-repo with a wrong source password: %s", res)
	}
	dst.env = append(dst.env, "CAIRN_FROM_PASSWORD=source password")
	dst.init("--from-repo", src.repo)
	dst.ok("backup", srcData)

	// The data directory's subtree (its ancestors' times differ between
	// the backups) is the same tree in both.
	s3cfg, err := s3.Parse(src.repo)
	if err != nil {
		t.Fatal(err)
	}
	s3cfg.AccessKeyID, s3cfg.SecretAccessKey = srv.User, srv.Password
	srcBE, err := s3.Open(context.Background(), s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := dataSubtree(t, srcBE, src.password, srcData)
	dstBE, _ := local.Open(dst.repo)
	if got := dataSubtree(t, dstBE, dst.password, srcData); got != want {
		t.Errorf("the same files got subtree %s in the new repository, %s in its source", got.Short(), want.Short())
	}
	// An independent repository names the same files differently.
	other := newCLI(t, filepath.Join(base, "other"))
	other.init()
	other.ok("backup", srcData)
	otherBE, _ := local.Open(other.repo)
	if dataSubtree(t, otherBE, other.password, srcData) == want {
		t.Fatal("two independent repositories gave the same subtree ID")
	}
}

// dataSubtree returns the tree ID of directory dir in the newest snapshot.
func dataSubtree(t *testing.T, be backend.Backend, password, dir string) crypto.ID {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Open(ctx, be, password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	sns, err := r.ListSnapshots(ctx)
	if err != nil || len(sns) == 0 {
		t.Fatalf("snapshots: %v", err)
	}
	n, err := tree.Find(ctx, r, sns[len(sns)-1].Tree, dir)
	if err != nil {
		t.Fatal(err)
	}
	return n.Subtree
}
