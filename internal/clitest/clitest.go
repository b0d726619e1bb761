// Package clitest builds the cairn command once per test binary and runs it
// the way the end-to-end tests need: a clean environment (no CAIRN_
// variable of the developer's leaks in), a timeout, and a check that no
// run prints a panic or a stack trace.
package clitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Build compiles github.com/cairn-backup/cairn/cmd/cairn into dir and
// returns the binary's path. Call it once, from TestMain.
func Build(dir string) (string, error) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	bin := filepath.Join(dir, "cairn")
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/cairn-backup/cairn/cmd/cairn").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Main builds the binary into a temporary directory, gives every cairn the
// tests start its local cache in that directory too (XDG_CACHE_HOME), runs
// the tests and cleans up. *bin receives the binary's path.
func Main(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "cairn-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "clitest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache")); err != nil {
		fmt.Fprintln(os.Stderr, "clitest:", err)
		return 1
	}
	if *bin, err = Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "clitest:", err)
		return 1
	}
	return m.Run()
}

// Result is one finished run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s\n--- stderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Runner runs the binary against one repository.
type Runner struct {
	Bin  string
	Repo string // passed as -r, unless empty
	// Env is added to the test process's environment, from which every
	// CAIRN_ variable and every variable with a prefix in Drop is left out.
	Env  []string
	Drop []string
	// Timeout bounds one run (default 3 minutes).
	Timeout time.Duration
}

// Command returns the command for args, not started.
func (r *Runner) Command(ctx context.Context, args ...string) *exec.Cmd {
	if r.Repo != "" {
		args = append([]string{"-r", r.Repo}, args...)
	}
	cmd := exec.CommandContext(ctx, r.Bin, args...)
	for _, kv := range os.Environ() {
		keep := !strings.HasPrefix(kv, "CAIRN_")
		for _, p := range r.Drop {
			keep = keep && !strings.HasPrefix(kv, p)
		}
		if keep {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, r.Env...)
	return cmd
}

// Run runs cairn with stdin (may be nil) and returns what it printed and
// its exit code. A run that cannot start fails the test; one that prints a
// panic or a stack trace is an error of the test.
func (r *Runner) Run(t testing.TB, stdin io.Reader, args ...string) Result {
	t.Helper()
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := r.Command(ctx, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("cairn %q: %v", args, err)
	}
	if s := res.Stdout + "\n" + res.Stderr; strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
		t.Errorf("cairn %q printed a panic or stack trace:\n%s", args, res)
	}
	return res
}
