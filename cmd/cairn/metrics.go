package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/backup"
	"github.com/cairn-backup/cairn/repo"
)

// backupMetrics is what a backup reports to monitoring (--metrics-file):
// Prometheus text format for node_exporter's textfile collector.
type backupMetrics struct {
	Profile  string // label; "" without --config
	Start    time.Time
	Duration time.Duration
	ExitCode int
	Result   *backup.Result // nil when no snapshot was written
}

const lastSuccessMetric = "cairn_backup_last_success_timestamp_seconds"

// writeMetricsFile replaces path atomically (a temporary file renamed into
// place, so the collector never reads half a file). The last success time
// survives failed runs: it is read back from the file being replaced.
func writeMetricsFile(path string, m backupMetrics) error {
	lastSuccess := previousMetric(path, lastSuccessMetric)
	if m.ExitCode == exitOK || m.ExitCode == exitPartial && m.Result != nil {
		lastSuccess = float64(m.Start.Add(m.Duration).Unix())
	}
	label := fmt.Sprintf(`{profile=%q}`, m.Profile)
	var b bytes.Buffer
	metric := func(name, help string, value float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s%s %s\n", name, help, name, name, label, strconv.FormatFloat(value, 'f', -1, 64))
	}
	metric("cairn_backup_last_run_timestamp_seconds", "When the last backup ended (Unix time).", float64(m.Start.Add(m.Duration).Unix()))
	metric(lastSuccessMetric, "When the last backup that wrote a snapshot ended (Unix time); 0 if none yet.", lastSuccess)
	metric("cairn_backup_exit_code", "Exit code of the last backup (0 ok, 1 failed, 3 snapshot written but partial).", float64(m.ExitCode))
	metric("cairn_backup_duration_seconds", "Duration of the last backup.", m.Duration.Seconds())
	if res := m.Result; res != nil && res.Archive != nil {
		s := res.Archive.Summary
		metric("cairn_backup_data_added_bytes", "New data of the last backup, before compression and deltas.", float64(s.DataAdded))
		metric("cairn_backup_data_stored_bytes", "Bytes the last backup added to the repository.", float64(s.DataAddedPacked))
		metric("cairn_backup_files_processed", "Files the last backup looked at.", float64(s.TotalFilesProcessed))
		metric("cairn_backup_bytes_processed", "Bytes the last backup looked at.", float64(s.TotalBytesProcessed))
		fmt.Fprintf(&b, "# HELP cairn_backup_source_ok Whether each source of the last snapshot was captured whole (1), partly or not (0).\n# TYPE cairn_backup_source_ok gauge\n")
		for _, src := range res.Snapshot.Sources {
			ok := 0
			if src.Status == repo.SourceOK {
				ok = 1
			}
			fmt.Fprintf(&b, "cairn_backup_source_ok{profile=%q,kind=%q,source=%q,status=%q} %d\n", m.Profile, src.Kind, src.Name, src.Status, ok)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("metrics file: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("metrics file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	return nil
}

// previousMetric reads the value of a metric from an earlier metrics file,
// or 0.
func previousMetric(path, name string) float64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			return v
		}
	}
	return 0
}
