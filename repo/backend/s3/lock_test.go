package s3_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// TestPurge: with object lock, Remove only hides; Purge leaves what is
// locked (and reports until when), brings back a hidden object that is
// still needed, leaves the older versions of an overwritten object, and
// once the dates pass deletes hidden objects and superseded configs.
func TestPurge(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	bucket := newBucketName("purge")
	be := open(t, configFor(srv, srv.Endpoint, bucket, "p"))
	const period = 3 * time.Second
	be.UseObjectLock(backend.ObjectLock{Mode: backend.Governance, Period: period})
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	if err := be.CheckObjectLock(ctx); err != nil {
		t.Fatal(err)
	}
	save := func(typ backend.FileType, n int) backend.Handle {
		data := backendtest.Random(t, n)
		h := backend.Handle{Type: typ, Name: backendtest.NameOf(data)}
		if err := be.Save(ctx, h, data); err != nil {
			t.Fatal(err)
		}
		return h
	}
	forgotten, needed, overwritten := save(backend.Snapshot, 100), save(backend.DataPack, 2000), save(backend.Index, 300)
	foreign := save(backend.Snapshot, 120) // hidden by someone else: no removal record
	cfg := backend.Handle{Type: backend.Config}
	for _, body := range []string{"v1", "v2"} {
		if err := be.Replace(ctx, cfg, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []backend.Handle{forgotten, needed, foreign} {
		if err := be.Remove(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	mc, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.User, srv.Password, "")})
	if err != nil {
		t.Fatal(err)
	}
	// Someone overwrites an index file (cairn never does).
	if _, err := mc.PutObject(ctx, bucket, "p/index/"+overwritten.Name, bytes.NewReader([]byte("garbage")), 7, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	keep := func(h backend.Handle) bool { return h == needed }
	removed := func(h backend.Handle) bool { return h == forgotten || h == needed }
	opts := func() backend.PurgeOptions {
		return backend.PurgeOptions{Now: time.Now(), Keep: keep, Removed: removed}
	}

	st, err := be.Purge(ctx, opts())
	if err != nil {
		t.Fatal(err)
	}
	if st.Locked != 2 || st.Deleted != 0 || st.Restored != 2 || st.Foreign != 1 || st.Overwritten != 1 || st.FirstUnlock.IsZero() {
		t.Fatalf("first purge: %+v; want the forgotten snapshot and the old config locked, the needed pack and the foreign snapshot restored, one overwritten", st)
	}
	if _, err := be.Stat(ctx, foreign); err != nil {
		t.Errorf("the snapshot someone else hid was not brought back: %v", err)
	}
	if _, err := be.Stat(ctx, needed); err != nil {
		t.Errorf("the needed pack was not brought back: %v", err)
	}
	if _, err := be.Stat(ctx, forgotten); !backend.IsNotFound(err) {
		t.Errorf("the removed snapshot is visible: %v", err)
	}

	time.Sleep(time.Until(st.LastUnlock) + 1100*time.Millisecond)
	st, err = be.Purge(ctx, opts())
	if err != nil {
		t.Fatal(err)
	}
	if st.Locked != 0 || st.Deleted != 2 || st.Overwritten != 1 {
		t.Errorf("purge after the dates: %+v; want 2 deleted, none locked, the overwritten index left", st)
	}
	versions := map[string]int{}
	for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "p/", Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		versions[o.Key]++
	}
	if versions["p/snapshots/"+forgotten.Name] != 0 || versions["p/config"] != 1 || versions["p/index/"+overwritten.Name] != 2 {
		t.Errorf("versions left: %v", versions)
	}
	if got, err := be.Load(ctx, cfg, 0, 0); err != nil || string(got) != "v2" {
		t.Errorf("config after purge: %q %v", got, err)
	}
}
