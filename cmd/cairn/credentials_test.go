package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// backupOnlyPolicy lets a user read, write and list, and not delete: the
// policy of docs/offsite.md for backup hosts.
const backupOnlyPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": ["arn:aws:s3:::cairn-offsite/*"]},
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::cairn-offsite"]}
  ]
}`

// TestBackupOnlyCredentials: with credentials that may read, write and
// list but not delete (temporary ones from MinIO's AssumeRole with the
// policy above), backup, copy, check and restore work; forget and prune
// fail with one line naming the missing permission, and the repository
// is unharmed.
func TestBackupOnlyCredentials(t *testing.T) {
	srv := s3test.StartT(t)
	base := t.TempDir()
	data := filepath.Join(base, "data")
	writeFile(t, filepath.Join(data, "a.bin"), randomBytes(41, 2<<20), 0o644)
	writeFile(t, filepath.Join(data, "b.txt"), []byte("backup only\n"), 0o644)
	local := newCLI(t, filepath.Join(base, "local"))
	local.init()
	local.ok("backup", data)

	admin := newCLI(t, "s3:"+srv.URL()+"/cairn-offsite/repo")
	admin.env = []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password, "CAIRN_FROM_PASSWORD=" + local.password}
	admin.init("--pack-size", "1", "--from-repo", local.repo)

	host := *admin
	host.env = append(stsCredentials(t, srv, backupOnlyPolicy, ""), "CAIRN_FROM_PASSWORD="+local.password)
	if s := host.copyFrom("--from-repo", local.repo); s.Copied != 1 {
		t.Fatalf("copy with backup-only credentials: %+v", s)
	}
	writeFile(t, filepath.Join(data, "c.bin"), randomBytes(42, 1<<20), 0o644) // only in the host's own backup
	hostBackup := host.backupJSON(data).SnapshotID
	host.checkReadData()
	target := filepath.Join(base, "target")
	host.ok("restore", "latest", "--target", target)
	compareTrees(t, data, restoredPath(target, data), false)

	for _, args := range [][]string{{"forget", "latest"}, {"prune", "--max-unused", "0", "--grace", "0"}} {
		if args[0] == "prune" {
			admin.ok("forget", hostBackup) // c.bin's data is then for prune to delete
		}
		res := host.run(args...)
		msg := strings.TrimSpace(res.stderr)
		if res.code != 1 || !strings.Contains(msg, "s3:DeleteObject") || strings.Count(msg, "\n") > 0 {
			t.Errorf("%s with backup-only credentials: want exit 1 and one line naming s3:DeleteObject: %s", args[0], res)
		}
	}
	admin.checkReadData()
	if n := len(host.snapshots()); n != 1 {
		t.Errorf("%d snapshots after the refused forget, want 1", n)
	}
	admin.ok("prune", "--max-unused", "0", "--grace", "0")
	admin.checkReadData()
}

// stsCredentials returns temporary credentials of srv (its AssumeRole
// API) restricted by policy, as AWS_ACCESS_KEY_ID, ... entries with prefix.
func stsCredentials(t *testing.T, srv *s3test.Server, policy, prefix string) []string {
	t.Helper()
	sts, err := credentials.NewSTSAssumeRole(srv.URL(), credentials.STSAssumeRoleOptions{AccessKey: srv.User, SecretKey: srv.Password,
		Policy: policy, DurationSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	v, err := sts.GetWithContext(nil)
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	return []string{prefix + "AWS_ACCESS_KEY_ID=" + v.AccessKeyID, prefix + "AWS_SECRET_ACCESS_KEY=" + v.SecretAccessKey, prefix + "AWS_SESSION_TOKEN=" + v.SessionToken}
}

// TestCopyS3ToS3 copies between two MinIO servers, each reached with
// temporary credentials that only it accepts: the source's from the
// CAIRN_FROM_ variables, the destination's from AWS_*.
func TestCopyS3ToS3(t *testing.T) {
	one, two := s3test.StartT(t), s3test.StartT(t)
	const all = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::*"]}]}`
	data := filepath.Join(t.TempDir(), "data")
	writeFile(t, filepath.Join(data, "x.bin"), randomBytes(51, 3<<20), 0o644)
	src := newCLI(t, "s3:"+one.URL()+"/cairn-one/repo")
	src.env = stsCredentials(t, one, all, "")
	src.init("--pack-size", "1")
	src.ok("backup", data)

	dst := newCLI(t, "s3:"+two.URL()+"/cairn-two/repo")
	dst.env = append(append(stsCredentials(t, two, all, ""), stsCredentials(t, one, all, "CAIRN_FROM_")...), "CAIRN_FROM_PASSWORD="+src.password)
	dst.init("--pack-size", "1", "--from-repo", src.repo)
	if s := dst.copyFrom("--from-repo", src.repo); s.Copied != 1 || s.Blobs == 0 {
		t.Fatalf("copy between two servers: %+v", s)
	}
	dst.checkReadData()
	target := filepath.Join(t.TempDir(), "r")
	dst.ok("restore", "latest", "--target", target)
	compareTrees(t, data, restoredPath(target, data), false)
}
