package s3_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/s3"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
	"github.com/cairn-backup/cairn/restorer"
)

// BenchmarkBackupRestore backs up about 200 MiB (half random, half
// compressible text, in 4 MiB files) to a local repository and to MinIO on
// loopback, then restores each, and reports the throughputs and the S3 to
// local ratios:
//
//	go test -run '^$' -bench BackupRestore -benchtime 1x ./repo/backend/s3
func BenchmarkBackupRestore(b *testing.B) {
	srv := s3test.Shared(b)
	src := b.TempDir()
	const total = 200 << 20
	makeTree(b, src, 42, total, 4<<20)
	ctx := context.Background()

	run := func(be backend.Backend) (backupTime, restoreTime time.Duration) {
		r, err := repo.Init(ctx, be, password, repo.Options{KDF: &testKDF})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		start := time.Now()
		sn, err := backup(ctx, r, src)
		if err != nil {
			b.Fatal(err)
		}
		backupTime = time.Since(start)

		r2, err := repo.Open(ctx, be, password, repo.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer r2.Close()
		if err := r2.LoadIndex(ctx); err != nil {
			b.Fatal(err)
		}
		target := b.TempDir()
		start = time.Now()
		st, err := restorer.Restore(ctx, r2, sn.Tree, restorer.Options{Target: target})
		if err != nil || st.Warnings > 0 {
			b.Fatalf("restore: %v (%d warnings)", err, st.Warnings)
		}
		restoreTime = time.Since(start)
		b.StopTimer()
		sameTree(b, src, filepath.Join(target, src))
		b.StartTimer()
		return backupTime, restoreTime
	}
	mbs := func(d time.Duration, n int) float64 { return float64(total) * float64(n) / 1e6 / d.Seconds() }
	var lbT, lrT, sbT, srT time.Duration

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lbe, err := local.Open(filepath.Join(b.TempDir(), "repo"))
		if err != nil {
			b.Fatal(err)
		}
		lb, lr := run(lbe)
		cfg := s3.Config{Endpoint: srv.Endpoint, Bucket: newBucketName("bench"), Prefix: "repo",
			AccessKeyID: srv.User, SecretAccessKey: srv.Password, Region: "us-east-1"}
		sbe, err := s3.Open(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		sb, sr := run(sbe)
		b.Logf("run %d: backup local %.0f MB/s, s3 %.0f MB/s; restore local %.0f MB/s, s3 %.0f MB/s", i+1, mbs(lb, 1), mbs(sb, 1), mbs(lr, 1), mbs(sr, 1))
		lbT, lrT, sbT, srT = lbT+lb, lrT+lr, sbT+sb, srT+sr
	}
	b.ReportMetric(mbs(lbT, b.N), "local-backup-MB/s")
	b.ReportMetric(mbs(sbT, b.N), "s3-backup-MB/s")
	b.ReportMetric(float64(lbT)/float64(sbT), "backup-s3/local")
	b.ReportMetric(mbs(lrT, b.N), "local-restore-MB/s")
	b.ReportMetric(mbs(srT, b.N), "s3-restore-MB/s")
	b.ReportMetric(float64(lrT)/float64(srT), "restore-s3/local")
}
