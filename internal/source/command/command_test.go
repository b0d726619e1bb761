package command

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/repo"
)

// run starts sh -c script and reads its output the way the archiver does.
func run(t *testing.T, script string) (out, stderr string, err error) {
	t.Helper()
	var errb bytes.Buffer
	c, err := Start(context.Background(), []string{"sh", "-c", script}, "/dump", repo.ChunkingDatabase, &errb)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Streams) != 1 || c.Streams[0].Path != "/dump" || c.Streams[0].Chunking != repo.ChunkingDatabase {
		t.Fatalf("streams %+v", c.Streams)
	}
	if r := c.Records; len(r) != 1 || r[0].Kind != kind || r[0].Meta["command"] != "sh -c "+script {
		t.Fatalf("records %+v", r)
	}
	b, rerr := io.ReadAll(c.Streams[0].Reader)
	if rerr != nil {
		t.Fatal(rerr)
	}
	err = c.Finish(nil) // waits for the command, and so for its stderr
	return string(b), errb.String(), err
}

func TestCommandOutput(t *testing.T) {
	out, stderr, err := run(t, "echo hello; echo note >&2")
	if err != nil || out != "hello\n" || stderr != "note\n" {
		t.Errorf("out %q stderr %q err %v", out, stderr, err)
	}
}

// A failing command fails the source with the end of its standard error
// on one line.
func TestCommandFails(t *testing.T) {
	_, _, err := run(t, "echo partial; for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3")
	if err == nil {
		t.Fatal("exit 3 did not fail the source")
	}
	msg := err.Error()
	if !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "line3 | line4 | line5 | line6 | line7") ||
		strings.Contains(msg, "line2") || strings.Contains(msg, "\n") || strings.HasSuffix(msg, "| ") {
		t.Errorf("error %q", msg)
	}
}

func TestCommandMissing(t *testing.T) {
	_, err := Start(context.Background(), []string{"/nonexistent/cairn-no-such-program"}, "/dump", repo.ChunkingFiles, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "start /nonexistent") {
		t.Errorf("error %v", err)
	}
	if _, err := Start(context.Background(), nil, "/dump", repo.ChunkingFiles, io.Discard); err == nil {
		t.Error("empty command started")
	}
}

// TestCommandRecordMasksSecrets: the command line stored in the snapshot
// and the failure message show no password given on it.
func TestCommandRecordMasksSecrets(t *testing.T) {
	c, err := Start(context.Background(), []string{"sh", "-c", "echo out; exit 2", "--password", "S3cret"}, "/dump", repo.ChunkingFiles, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(c.Streams[0].Reader); err != nil {
		t.Fatal(err)
	}
	stored := c.Records[0].Meta["command"]
	ferr := c.Finish(nil)
	if ferr == nil {
		t.Fatal("exit 2 did not fail the source")
	}
	for _, s := range []string{stored, ferr.Error()} {
		if strings.Contains(s, "S3cret") || !strings.Contains(s, "--password ***") {
			t.Errorf("secret not masked: %q", s)
		}
	}
}
