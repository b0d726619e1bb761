// Package command is the command source: it runs a program (pg_dump -Fc,
// mysqldump, tar ...) and stores its standard output as one file of the
// snapshot. A program that exits non-zero fails the backup, with the last
// lines it wrote to standard error in the message.
package command

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/internal/procenv"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/tailbuf"
	"github.com/cairn-backup/cairn/repo"
)

// kind is the kind of the command source's record.
const kind = "command"

// stderrTail is how much of the command's standard error is kept for the
// error message.
const stderrTail = 64 << 10

// Start runs argv and returns the Capture that stores its standard output
// at path, chunked as chunking says (repo.ChunkingFiles, ...). The
// command's standard error goes to stderr as it is written.
func Start(ctx context.Context, argv []string, path, chunking string, stderr io.Writer) (source.Capture, error) {
	if len(argv) == 0 {
		return source.Capture{}, fmt.Errorf("command source %s: no command", path)
	}
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = procenv.Child() // not the repository's or the bucket's credentials
	tail := tailbuf.New(stderrTail)
	c.Stderr = io.MultiWriter(tail, stderr)
	out, err := c.StdoutPipe()
	if err != nil {
		return source.Capture{}, err
	}
	if err := c.Start(); err != nil {
		return source.Capture{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	line := MaskArgs(argv) // stored in the snapshot and printed: no secrets
	return source.Capture{
		Streams: []archiver.Stream{{Path: path, Reader: out, Chunking: chunking}},
		Records: []repo.Source{{Kind: kind, Name: path, Status: repo.SourceOK, Meta: map[string]string{"command": line}}},
		Finish: func(*archiver.Result) error {
			if err := c.Wait(); err != nil {
				msg := tail.String()
				if msg != "" {
					msg = ": " + lastLines(msg, 5)
				}
				return fmt.Errorf("command %q failed (%v)%s", line, err, msg)
			}
			return nil
		},
	}, nil
}

// lastLines joins the last n lines of s with " | ", to fit an error
// message on one line.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
