package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// lockedBackupOnlyPolicy is docs/offsite.md's backup-only policy for a
// bucket with object lock: writes carry a retention, which needs
// s3:PutObjectRetention.
const lockedBackupOnlyPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:PutObjectRetention"], "Resource": ["arn:aws:s3:::cairn-locked/*"]},
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::cairn-locked"]}
  ]
}`

// lockPeriod is the retention of the test repositories: long enough for
// the steps before the first wait, short enough to wait for.
const lockPeriod = 20 * time.Second

func lockDays(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds()/86400, 'g', -1, 64)
}

func rootClient(t *testing.T, srv *s3test.Server) *minio.Client {
	t.Helper()
	mc, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.User, srv.Password, "")})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

// objectVersions lists every version and delete marker below prefix.
func objectVersions(t *testing.T, mc *minio.Client, bucket, prefix string) []minio.ObjectInfo {
	t.Helper()
	var out []minio.ObjectInfo
	for o := range mc.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		out = append(out, o)
	}
	return out
}

// lockLine returns the lock_maintenance line of a prune --json.
func lockLine(t *testing.T, res result) lockJSON {
	t.Helper()
	for _, l := range strings.Split(res.stdout, "\n") {
		var j lockJSON
		if json.Unmarshal([]byte(l), &j) == nil && j.MessageType == "lock_maintenance" {
			return j
		}
	}
	t.Fatalf("no lock_maintenance line in %s", res)
	return lockJSON{}
}

// TestObjectLock: on a MinIO bucket with object locking in COMPLIANCE
// mode, every object cairn writes is locked; even the root credentials
// cannot delete a locked version; lock extend moves the dates; forget and
// prune only hide what they remove, report when it unlocks, and a prune
// after that date deletes it for good; a pack hidden by someone else is
// brought back by prune. The repository stays whole throughout.
func TestObjectLock(t *testing.T) {
	srv := s3test.StartT(t)
	ctx := context.Background()
	mc := rootClient(t, srv)
	base := t.TempDir()
	dataA, dataB := filepath.Join(base, "a"), filepath.Join(base, "b")
	writeFile(t, filepath.Join(dataA, "a.bin"), randomBytes(71, 3<<20), 0o644)
	writeFile(t, filepath.Join(dataB, "b.bin"), randomBytes(72, 2<<20), 0o644)
	writeFile(t, filepath.Join(dataB, "b.txt"), []byte("kept\n"), 0o644)

	c := newCLI(t, "s3:"+srv.URL()+"/cairn-locked/repo")
	c.env = []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password}
	out := c.ok("init", "--pack-size", "1", "--s3-object-lock", "compliance", "--s3-lock-days", lockDays(lockPeriod))
	if !strings.Contains(out.stdout, "locked (COMPLIANCE)") {
		t.Errorf("init does not tell of the lock: %s", out)
	}
	if enabled, _, _, _, err := mc.GetObjectLockConfig(ctx, "cairn-locked"); err != nil || enabled != "Enabled" {
		t.Fatalf("init made the bucket without object locking: %q %v", enabled, err)
	}
	snapA := c.backupJSON(dataA).SnapshotID

	// A backup host with credentials that may write (with a retention)
	// and read but not delete backs up; its forget fails in one line.
	host := *c
	host.env = stsCredentials(t, srv, lockedBackupOnlyPolicy, "")
	host.ok("backup", dataB)
	if res := host.run("forget", snapA); res.code != 1 || !strings.Contains(res.stderr, "s3:DeleteObject") || strings.Count(strings.TrimSpace(res.stderr), "\n") > 0 {
		t.Errorf("forget with backup-only credentials: want exit 1 and one line naming s3:DeleteObject: %s", res)
	}

	// Every object is locked in COMPLIANCE mode until about a period
	// after it was written.
	current := objectVersions(t, mc, "cairn-locked", "repo/")
	if len(current) < 8 {
		t.Fatalf("only %d objects in the repository", len(current))
	}
	for _, o := range current {
		mode, until, err := mc.GetObjectRetention(ctx, "cairn-locked", o.Key, o.VersionID)
		if err != nil || mode == nil || *mode != minio.Compliance || until == nil || until.Before(o.LastModified.Add(lockPeriod-2*time.Second)) {
			t.Fatalf("%s: retention %v until %v (%v), want COMPLIANCE until a period after %v", o.Key, mode, until, err, o.LastModified)
		}
	}
	var pack minio.ObjectInfo
	for _, o := range current {
		if strings.HasPrefix(o.Key, "repo/data/") {
			pack = o
		}
	}
	for _, bypass := range []bool{false, true} {
		err := mc.RemoveObject(ctx, "cairn-locked", pack.Key, minio.RemoveObjectOptions{VersionID: pack.VersionID, GovernanceBypass: bypass})
		if err == nil {
			t.Fatalf("root credentials deleted the locked version of %s (bypass %v)", pack.Key, bypass)
		}
	}

	// Extension: the first pass on this machine is due, the second not.
	_, before, _ := mc.GetObjectRetention(ctx, "cairn-locked", pack.Key, "")
	time.Sleep(1100 * time.Millisecond) // retention dates have whole seconds
	if res := c.ok("lock", "extend"); !strings.Contains(res.stdout, "locked ") {
		t.Errorf("lock extend: %s", res)
	}
	_, after, _ := mc.GetObjectRetention(ctx, "cairn-locked", pack.Key, "")
	if !after.After(*before) {
		t.Errorf("lock extend left %s locked until %v (was %v)", pack.Key, after, before)
	}
	if res := c.ok("lock", "extend"); !strings.Contains(res.stdout, "not due") {
		t.Errorf("a second lock extend right after the first: %s", res)
	}

	// A pack hidden by someone else (a delete marker, which locks do not
	// prevent) is missing for check; prune brings it back.
	if err := mc.RemoveObject(ctx, "cairn-locked", pack.Key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if res := c.run("check"); res.code == 0 {
		t.Errorf("check passes with a hidden pack: %s", res)
	}
	if j := lockLine(t, c.ok("--json", "prune", "--grace", "0")); j.Restored != 1 {
		t.Errorf("prune restored %d hidden packs, want 1: %+v", j.Restored, j)
	}
	c.ok("check")
	// So is a snapshot someone else hid: no removal record names it.
	// (Not snapshot A: the backup host's refused forget left a removal
	// record naming it, which is how cairn tells its own removals.)
	var snapKey string
	for _, o := range current {
		if strings.HasPrefix(o.Key, "repo/snapshots/") && !strings.HasPrefix(o.Key, "repo/snapshots/"+snapA) {
			snapKey = o.Key
		}
	}
	if err := mc.RemoveObject(ctx, "cairn-locked", snapKey, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := len(c.snapshots()); n != 1 {
		t.Fatalf("%d snapshots listed with one hidden, want 1", n)
	}
	if j := lockLine(t, c.ok("--json", "prune", "--grace", "0")); j.Foreign != 1 {
		t.Errorf("prune brought back %d objects hidden by someone else, want the snapshot: %+v", j.Foreign, j)
	}
	if n := len(c.snapshots()); n != 2 {
		t.Errorf("%d snapshots after prune, want the hidden one back", n)
	}

	// forget and prune hide what they remove; it stays locked.
	c.ok("forget", snapA)
	j := lockLine(t, c.ok("--json", "prune", "--grace", "0", "--max-unused", "0"))
	if j.Locked == 0 || j.FirstUnlock == nil || j.LastUnlock == nil || j.LastUnlock.Before(time.Now()) {
		t.Fatalf("prune of a forgotten snapshot reports nothing locked: %+v", j)
	}
	hidden := map[string]bool{}
	for _, o := range objectVersions(t, mc, "cairn-locked", "repo/") {
		if o.IsLatest && o.IsDeleteMarker {
			hidden[o.Key] = true
		}
	}
	if len(hidden) < 2 || !hidden["repo/snapshots/"+fullSnapshotID(t, current, snapA)] {
		t.Errorf("forget and prune hid %v, want the snapshot and its packs", hidden)
	}
	c.checkReadData()

	// Once the dates pass, prune deletes every version of them.
	time.Sleep(time.Until(*j.LastUnlock) + 1500*time.Millisecond)
	j = lockLine(t, c.ok("--json", "prune", "--grace", "0"))
	if j.Purged < len(hidden) || j.Locked != 0 {
		t.Errorf("prune after the locks passed: %+v, want at least %d purged and none locked", j, len(hidden))
	}
	for _, o := range objectVersions(t, mc, "cairn-locked", "repo/") {
		if hidden[o.Key] {
			t.Errorf("%s (version %s, delete marker %v) is still stored", o.Key, o.VersionID, o.IsDeleteMarker)
		}
	}
	c.checkReadData()
	target := filepath.Join(base, "target")
	c.ok("restore", "latest", "--target", target)
	compareTrees(t, dataB, restoredPath(target, dataB), false)
}

// fullSnapshotID finds the object name of the snapshot whose short ID is
// given, among the listed objects.
func fullSnapshotID(t *testing.T, objs []minio.ObjectInfo, short string) string {
	t.Helper()
	for _, o := range objs {
		name, ok := strings.CutPrefix(o.Key, "repo/snapshots/")
		if ok && strings.HasPrefix(name, short) {
			return name
		}
	}
	t.Fatalf("no snapshot object %s", short)
	return ""
}

// TestObjectLockRefused: init refuses object lock on a local repository
// and on an existing bucket made without locking; GOVERNANCE mode locks
// objects in that mode.
func TestObjectLockRefused(t *testing.T) {
	srv := s3test.StartT(t)
	ctx := context.Background()
	mc := rootClient(t, srv)
	env := []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password}

	local := newCLI(t, filepath.Join(t.TempDir(), "repo"))
	if res := local.run("init", "--s3-object-lock", "compliance", "--s3-lock-days", "30"); res.code == 0 || !strings.Contains(res.stderr, "S3") {
		t.Errorf("object lock on a local repository: %s", res)
	}
	if res := local.run("init", "--s3-object-lock", "forever", "--s3-lock-days", "30"); res.code == 0 || !strings.Contains(res.stderr, "governance or compliance") {
		t.Errorf("an unknown lock mode: %s", res)
	}
	if err := mc.MakeBucket(ctx, "cairn-unlocked", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	plain := newCLI(t, "s3:"+srv.URL()+"/cairn-unlocked/repo")
	plain.env = env
	if res := plain.run("init", "--s3-object-lock", "governance", "--s3-lock-days", "30"); res.code == 0 || !strings.Contains(res.stderr, "no object locking") {
		t.Errorf("object lock on a bucket without locking: %s", res)
	}

	gov := newCLI(t, "s3:"+srv.URL()+"/cairn-governance")
	gov.env = env
	gov.init("--s3-object-lock", "governance", "--s3-lock-days", "30")
	objs := objectVersions(t, mc, "cairn-governance", "")
	if len(objs) == 0 {
		t.Fatal("no objects after init")
	}
	for _, o := range objs {
		mode, until, err := mc.GetObjectRetention(ctx, "cairn-governance", o.Key, o.VersionID)
		if err != nil || mode == nil || *mode != minio.Governance || until.Sub(o.LastModified) < 29*24*time.Hour {
			t.Errorf("%s: retention %v until %v (%v), want GOVERNANCE for 30 days", o.Key, mode, until, err)
		}
	}
}
