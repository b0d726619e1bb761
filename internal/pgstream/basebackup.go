package pgstream

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cairn-backup/cairn/internal/pgwal"
)

// BaseBackupOptions configure StartBaseBackup.
type BaseBackupOptions struct {
	Conn  *ConnInfo
	Tools Tools
	Label string
	// SpreadCheckpoint waits for a spread checkpoint instead of asking
	// for a fast one.
	SpreadCheckpoint bool
}

// BaseBackup is a running pg_basebackup writing the data directory as one
// tar stream (pg_basebackup -Ft -D - -X none) to Reader. The WAL it needs
// comes from the archive, so the server must archive (archive_mode). Call
// Finish once Reader was consumed (or abandoned).
type BaseBackup struct {
	Reader io.Reader

	SystemID      uint64
	ServerVersion string
	SegmentSize   int64
	// Set by Finish, from the backup_label and backup_manifest in the
	// stream.
	StartLSN, StopLSN string
	Timeline          uint32

	run    *run
	tee    *io.PipeWriter
	parsed chan tarFacts
}

// tarFacts is what the stream itself says about the backup.
type tarFacts struct {
	label    *pgwal.BackupLabel
	stop     string // End-LSN of the manifest's WAL range
	timeline uint32
	err      error
}

// StartBaseBackup checks that the server archives its WAL and starts
// pg_basebackup.
func StartBaseBackup(ctx context.Context, o BaseBackupOptions) (*BaseBackup, error) {
	conn, err := o.Conn.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	b := &BaseBackup{}
	var num int
	var archiveMode, sysid string
	err = conn.QueryRow(ctx, `SELECT system_identifier::text, current_setting('server_version'), current_setting('server_version_num')::int,
		pg_size_bytes(current_setting('wal_segment_size')), current_setting('archive_mode') FROM pg_control_system()`).Scan(
		&sysid, &b.ServerVersion, &num, &b.SegmentSize, &archiveMode)
	if err != nil {
		return nil, fmt.Errorf("read server facts on %s: %s", o.Conn, o.Conn.Redact(err.Error()))
	}
	if b.SystemID, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return nil, fmt.Errorf("system identifier %q: %w", sysid, err)
	}
	if archiveMode == "off" {
		return nil, fmt.Errorf("%s does not archive its WAL (archive_mode = off): a base backup is of no use without it; set archive_mode = on and archive_command = 'cairn ... wal-push %%p' (README, \"Point-in-time recovery\")", o.Conn)
	}
	server := Version{Text: strings.Fields(b.ServerVersion)[0], Num: num}
	path, _, err := checkToolVersion(ctx, o.Tools, "pg_basebackup", server, serverWhat(server, o.Conn))
	if err != nil {
		return nil, err
	}
	label := o.Label
	if label == "" {
		label = "cairn"
	}
	checkpoint := "fast"
	if o.SpreadCheckpoint {
		checkpoint = "spread"
	}
	args := []string{"--no-password", "--pgdata=-", "--format=tar", "--wal-method=none", "--checkpoint=" + checkpoint, "--verbose", "--label=" + label}
	if b.run, err = startRun(ctx, o.Conn, path, args); err != nil {
		return nil, err
	}
	// The stream is read once, by the archiver; a tar reader looks at it
	// on the way for the backup_label (where the WAL starts) and the
	// backup_manifest pg_basebackup puts at its end (where it stops).
	pr, pw := io.Pipe()
	b.tee, b.parsed = pw, make(chan tarFacts, 1)
	b.Reader = io.TeeReader(b.run.out, pw)
	go func() {
		f := scanBaseTar(pr)
		_, _ = io.Copy(io.Discard, pr)
		b.parsed <- f
	}()
	return b, nil
}

// scanBaseTar reads a base backup's tar stream for its backup_label and
// backup_manifest.
func scanBaseTar(r io.Reader) tarFacts {
	var f tarFacts
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return f
		}
		if err != nil {
			f.err = err
			return f
		}
		switch h.Name {
		case "backup_label":
			data, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				f.err = err
				return f
			}
			l, err := pgwal.ParseBackupLabel(data)
			if err != nil {
				f.err = err
				return f
			}
			f.label = &l
		case "backup_manifest":
			var m struct {
				WALRanges []struct {
					Timeline uint32 `json:"Timeline"`
					End      string `json:"End-LSN"`
				} `json:"WAL-Ranges"`
			}
			if err := json.NewDecoder(tr).Decode(&m); err != nil {
				f.err = fmt.Errorf("backup_manifest: %w", err)
				return f
			}
			if n := len(m.WALRanges); n > 0 {
				f.stop, f.timeline = m.WALRanges[n-1].End, m.WALRanges[n-1].Timeline
			}
		}
	}
}

// Finish waits for pg_basebackup and takes the start and end of the WAL
// the backup needs from the stream.
func (b *BaseBackup) Finish() error {
	err := b.run.wait()
	b.tee.Close()
	f := <-b.parsed
	if err != nil {
		return err
	}
	switch {
	case f.err != nil:
		return fmt.Errorf("pg_basebackup's tar stream: %w", f.err)
	case f.label == nil:
		return errors.New("pg_basebackup's tar stream has no backup_label")
	case f.stop == "":
		return errors.New("pg_basebackup's tar stream has no backup_manifest with the WAL range (PostgreSQL 13 or later writes one)")
	}
	b.StartLSN, b.Timeline, b.StopLSN = f.label.StartLSN.String(), f.label.Timeline, f.stop
	if f.timeline > b.Timeline {
		b.Timeline = f.timeline
	}
	return nil
}

// Abandon stops pg_basebackup (the backup failed elsewhere).
func (b *BaseBackup) Abandon() {
	_ = b.run.wait()
	b.tee.Close()
	<-b.parsed
}
