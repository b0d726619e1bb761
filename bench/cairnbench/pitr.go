package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/pgstream"
	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
)

// pitrDataset archives a busy pgbench database's WAL with cairn wal-push
// for several days, with a base backup each day: it reports how fast
// wal-push keeps up, and what the daily base backups cost in cairn's
// repository next to full copies and to restic fed the same tar.
const pitrDataset = "pitr"

// pitrDay is one day of the pitr data set.
type pitrDay struct {
	Day                int     `json:"day"`
	PgbenchSeconds     float64 `json:"pgbench_seconds"`
	Transactions       int64   `json:"transactions"`
	SegmentsArchived   int64   `json:"segments_archived"`
	BacklogAtEnd       int     `json:"backlog_at_end"` // .ready files when pgbench stopped
	DrainSeconds       float64 `json:"drain_seconds"`  // from then until the archive caught up
	SegmentsPerSecond  float64 `json:"segments_per_second"`
	FailedPushes       int64   `json:"failed_pushes"`
	BaseTarBytes       int64   `json:"base_tar_bytes"` // one full copy
	CairnWALGrowth     int64   `json:"cairn_wal_growth_bytes"`
	DatabaseBytes      int64   `json:"database_bytes"`
	PgBasebackupSecond float64 `json:"pg_basebackup_seconds"`
}

type pitrInfo struct {
	Scale int `json:"pgbench_scale"`
	// The burst: WAL piled up while archiving was off, then drained.
	BurstSegments          int64     `json:"burst_segments"`
	BurstDrainSeconds      float64   `json:"burst_drain_seconds"`
	BurstSegmentsPerSecond float64   `json:"burst_segments_per_second"`
	BurstMBPerSecond       float64   `json:"burst_mb_per_second"`
	Days                   []pitrDay `json:"days"`
	FullCopiesBytes        int64     `json:"full_copies_bytes"`
	CairnBaseBytes         int64     `json:"cairn_base_backups_bytes"`
	ResticBaseBytes        int64     `json:"restic_base_backups_bytes"`
	CairnWALBytes          int64     `json:"cairn_wal_bytes"`
	WALBytes               int64     `json:"wal_bytes"` // segments archived x segment size
}

func (b *bench) runPITR() error {
	days, scale, dur := 7, 20, 15*time.Second
	if b.o.quick {
		days, scale, dur = 3, 3, 5*time.Second
	}
	info := &pitrInfo{Scale: scale}
	b.res.Datasets[pitrDataset] = info

	// The server runs archive_command as its own user: cairn, its
	// password and the repository live in a directory that user owns.
	// (Beside the work directory, which only root may enter.)
	dir, err := os.MkdirTemp(filepath.Dir(b.work), "cairnbench-pitr-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cairnBin := filepath.Join(dir, "cairn")
	if err := copyFile(b.o.cairn, cairnBin, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	repoDir := filepath.Join(dir, "repo")
	common := " -r " + repoDir + " --password-file " + filepath.Join(dir, "password") + " --cache-dir " + filepath.Join(dir, "cache")
	runAs := ""
	if os.Geteuid() == 0 {
		runAs = "postgres"
	}
	wrapper := "#!/bin/sh\nexec " + cairnBin + " \"$@\"\n"
	if runAs != "" {
		wrapper = "#!/bin/sh\nexec runuser -u " + runAs + " -- " + cairnBin + " \"$@\"\n"
	}
	for name, body := range map[string]string{
		"archive.sh": "#!/bin/sh\nexec " + cairnBin + common + " wal-push \"$1\"\n",
		"cairn-as":   wrapper,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	if runAs != "" {
		uid, gid, err := pgstream.UserIDs(runAs)
		if err == nil {
			err = pgstream.ChownTree(dir, uid, gid)
		}
		if err != nil {
			return err
		}
	}
	c := &repoT{tool: "cairn", bin: filepath.Join(dir, "cairn-as"), dir: repoDir, flags: []string{"--cache-dir", filepath.Join(dir, "cache")}}
	if err := b.initRepo(c); err != nil {
		return err
	}
	r, err := b.newRepo("restic", pitrDataset)
	if err != nil {
		return err
	}
	// Full page writes on, checkpoints every minute: WAL as a production
	// server writes it (the test server's defaults write much less).
	s, stop, err := b.pgServer("wal_level = replica", "archive_mode = on", "max_wal_senders = 4",
		"full_page_writes = on", "checkpoint_timeout = '60s'",
		"archive_command = '"+filepath.Join(dir, "archive.sh")+" %p'")
	if err != nil {
		return err
	}
	defer stop()
	b.logf("   pitr: pgbench -i -s %d ...", scale)
	if _, err := psql(s, "postgres", "CREATE DATABASE bench"); err != nil {
		return err
	}
	if out, err := s.ClientErr("pgbench", "-i", "-q", "-s", strconv.Itoa(scale), "bench"); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	if _, err := b.waitArchived(s); err != nil {
		return err
	}
	if err := b.pitrBurst(s, dur, info); err != nil {
		return err
	}
	tarFile := filepath.Join(b.work, "pitr-base.tar")
	dataDir := filepath.Join(s.Dir, "data")
	url := s.URL("postgres")
	for day := 1; day <= days; day++ {
		d := pitrDay{Day: day}
		archived0, failed0 := archiverCounts(s)
		repo0 := c.bytes()
		// A busy day: pgbench as fast as it goes, the archiver behind it.
		t0 := time.Now()
		out, err := s.ClientErr("pgbench", "-n", "-c", "4", "-j", "2", "-T", strconv.Itoa(int(dur.Seconds())), "bench")
		if err != nil {
			return fmt.Errorf("pgbench: %v: %s", err, out)
		}
		d.PgbenchSeconds = time.Since(t0).Seconds()
		d.Transactions = pgbenchTransactions(out)
		d.BacklogAtEnd = readyFiles(dataDir)
		t1 := time.Now()
		if _, err := b.waitArchived(s); err != nil {
			return err
		}
		d.DrainSeconds = time.Since(t1).Seconds()
		archived1, failed1 := archiverCounts(s)
		d.SegmentsArchived, d.FailedPushes = archived1-archived0, failed1-failed0
		d.SegmentsPerSecond = float64(d.SegmentsArchived) / time.Since(t0).Seconds()
		d.CairnWALGrowth = c.bytes() - repo0
		d.DatabaseBytes = dbSize(s)
		b.logf("   pitr: day %d: %d transactions in %.0fs, %d segments archived (%.2f/s, backlog %d at the end, drained in %.1fs, %d failed pushes), WAL +%s in the repository",
			day, d.Transactions, d.PgbenchSeconds, d.SegmentsArchived, d.SegmentsPerSecond, d.BacklogAtEnd, d.DrainSeconds, d.FailedPushes, fmtBytes(d.CairnWALGrowth))

		// The day's base backup: pg_basebackup alone to a file (the full
		// copy, and restic's input), then cairn live and restic on it.
		secs, _, _, err := b.execMeasured(filepath.Join(s.BinDir, "pg_basebackup"),
			[]string{"--no-password", "--pgdata=-", "--format=tar", "--wal-method=none", "--checkpoint=fast"}, s.Env(), "", tarFile)
		if err != nil {
			return err
		}
		d.PgBasebackupSecond, d.BaseTarBytes = secs, fileSize(tarFile)
		phase := fmt.Sprintf("day %d base backup", day)
		cin := inv{repo: c, args: []string{"--json", "backup", "--pg-base", url, "--pg-bin", s.BinDir}, backup: true, input: d.BaseTarBytes}
		rin := inv{repo: r, args: []string{"backup", "--json", "--stdin", "--stdin-filename", "base.tar"}, stdin: tarFile, backup: true}
		row, err := b.pair(pitrDataset, phase, cin, rin)
		if err != nil {
			return err
		}
		row.Note = fmt.Sprintf("cairn runs pg_basebackup itself (alone to a file: %.2fs, %s); restic reads that file", secs, fmtBytes(d.BaseTarBytes))
		info.FullCopiesBytes += d.BaseTarBytes
		info.CairnBaseBytes += row.Cairn.GrowthBytes
		info.ResticBaseBytes += row.Restic.GrowthBytes
		info.CairnWALBytes += d.CairnWALGrowth
		info.WALBytes += d.SegmentsArchived * 16 << 20
		info.Days = append(info.Days, d)
	}
	os.Remove(tarFile)
	b.logf("   pitr: %d base backups: %s as full copies, cairn stored %s, restic %s; WAL %s archived, %s in cairn's repository",
		days, fmtBytes(info.FullCopiesBytes), fmtBytes(info.CairnBaseBytes), fmtBytes(info.ResticBaseBytes), fmtBytes(info.WALBytes), fmtBytes(info.CairnWALBytes))
	return nil
}

// pitrBurst measures how fast wal-push drains a backlog: archiving is
// switched off (an empty archive_command keeps the WAL) during a pgbench
// run, then on again, and the time to archive everything is taken.
func (b *bench) pitrBurst(s *pgtest.Server, dur time.Duration, info *pitrInfo) error {
	cmd, err := psql(s, "postgres", "SHOW archive_command")
	if err != nil {
		return err
	}
	set := func(v string) error {
		_, err := psql(s, "postgres", "ALTER SYSTEM SET archive_command = '"+strings.ReplaceAll(v, "'", "''")+"'")
		if err == nil {
			_, err = psql(s, "postgres", "SELECT pg_reload_conf()")
		}
		return err
	}
	if err := set(""); err != nil {
		return err
	}
	time.Sleep(time.Second) // the reload reaches the archiver
	archived0, _ := archiverCounts(s)
	// A bulk load writes WAL much faster than pgbench: about 50 segments.
	rows := 8_000_000
	if b.o.quick {
		rows = 1_000_000
	}
	if _, err := psql(s, "bench", fmt.Sprintf("CREATE TABLE pitr_burst AS SELECT g, md5(g::text) AS a, md5((g * 7)::text) AS b FROM generate_series(1, %d) g", rows)); err != nil {
		return err
	}
	if out, err := s.ClientErr("pgbench", "-n", "-c", "4", "-j", "2", "-T", strconv.Itoa(int(dur.Seconds())), "bench"); err != nil {
		return fmt.Errorf("pgbench: %v: %s", err, out)
	}
	backlog := readyFiles(filepath.Join(s.Dir, "data"))
	t0 := time.Now()
	if err := set(cmd); err != nil {
		return err
	}
	if _, err := b.waitArchived(s); err != nil {
		return err
	}
	info.BurstDrainSeconds = time.Since(t0).Seconds()
	if _, err := psql(s, "bench", "DROP TABLE pitr_burst"); err != nil {
		return err
	}
	archived1, _ := archiverCounts(s)
	info.BurstSegments = archived1 - archived0
	info.BurstSegmentsPerSecond = float64(info.BurstSegments) / info.BurstDrainSeconds
	info.BurstMBPerSecond = info.BurstSegmentsPerSecond * 16 * (1 << 20) / 1e6
	b.logf("   pitr: burst: %d segments waiting (%d ready when archiving resumed), archived in %.1fs: %.1f segments/s, %.0f MB/s of WAL",
		info.BurstSegments, backlog, info.BurstDrainSeconds, info.BurstSegmentsPerSecond, info.BurstMBPerSecond)
	return nil
}

// waitArchived switches to a new WAL segment and waits until the server
// has archived everything before it; it returns the segment.
func (b *bench) waitArchived(s *pgtest.Server) (string, error) {
	if _, err := psql(s, "bench", "CREATE TABLE IF NOT EXISTS pitr_tick (t timestamptz); INSERT INTO pitr_tick VALUES (now())"); err != nil {
		return "", err
	}
	seg, err := psql(s, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		last, err := psql(s, "postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
		if err != nil {
			return "", err
		}
		if last >= seg {
			return seg, nil
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			return "", fmt.Errorf("WAL up to %s not archived after 10 minutes (last %s)", seg, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func archiverCounts(s *pgtest.Server) (archived, failed int64) {
	out, err := psql(s, "postgres", "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(out)
	if len(f) == 2 {
		archived, _ = strconv.ParseInt(f[0], 10, 64)
		failed, _ = strconv.ParseInt(f[1], 10, 64)
	}
	return archived, failed
}

// readyFiles counts the WAL files waiting for archive_command.
func readyFiles(dataDir string) int {
	m, _ := filepath.Glob(filepath.Join(dataDir, "pg_wal", "archive_status", "*.ready"))
	return len(m)
}

// pgbenchTransactions reads "number of transactions actually processed: N".
func pgbenchTransactions(out string) int64 {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "number of transactions actually processed: "); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}
