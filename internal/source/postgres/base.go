package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/internal/pgstream"
	"github.com/cairn-backup/cairn/internal/pgwal"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/walarchive"
	"github.com/cairn-backup/cairn/repo"
)

// BaseDir holds base backups in a snapshot: BaseDir/<system id>/base.tar.
const BaseDir = "/postgres-base/"

// startBase starts pg_basebackup; its Finish records the WAL range the
// backup needs (walarchive.BaseBackup) in the snapshot.
func startBase(ctx context.Context, f BackupOptions, o source.Out) (source.Capture, error) {
	c, err := pgstream.ParseConn(f.BaseURL)
	if err != nil {
		return source.Capture{}, fmt.Errorf("--pg-base: %w", err)
	}
	started := time.Now()
	b, err := pgstream.StartBaseBackup(ctx, pgstream.BaseBackupOptions{Conn: c, Tools: pgstream.Tools{Dir: f.Bin},
		Label: "cairn " + started.UTC().Format(time.RFC3339), SpreadCheckpoint: f.BaseSpread})
	if err != nil {
		return source.Capture{}, err
	}
	sys := strconv.FormatUint(b.SystemID, 10)
	p := BaseDir + sys + "/base.tar"
	srcs := []repo.Source{{Kind: walarchive.KindBase, Name: p, Status: repo.SourceOK, Meta: map[string]string{"connection": c.String()}}}
	return source.Capture{
		Streams: []archiver.Stream{{Path: p, Reader: b.Reader, Chunking: repo.ChunkingDatabase}},
		Records: srcs,
		Finish: func(res *archiver.Result) error {
			if res == nil {
				b.Abandon()
				return nil
			}
			if err := b.Finish(); err != nil {
				return err
			}
			start, err := pgwal.ParseLSN(b.StartLSN)
			if err != nil {
				return err
			}
			det := walarchive.BaseBackup{SystemID: sys, Timeline: b.Timeline, StartLSN: b.StartLSN, StopLSN: b.StopLSN,
				StartSegment: pgwal.SegmentName(b.Timeline, start.SegmentNo(b.SegmentSize), b.SegmentSize),
				StartTime:    started, StopTime: time.Now(), SegmentSize: b.SegmentSize, ServerVersion: b.ServerVersion, Path: p}
			js, err := json.Marshal(det)
			if err != nil {
				return err
			}
			srcs[0].Details = js
			o.Printf("postgres: base backup of system %s -> %s: WAL %s to %s on timeline %d (from %s)\n", sys, p, det.StartLSN, det.StopLSN, det.Timeline, det.StartSegment)
			return nil
		},
	}, nil
}
