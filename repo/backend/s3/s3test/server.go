// Package s3test runs a real MinIO server for tests, and a fault-injecting
// proxy to put in front of it. The MinIO binary is $CAIRN_MINIO or
// ${CAIRN_CACHE:-$HOME/.cache/cairn}/bin/minio (scripts/minio.sh builds it).
package s3test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrNoBinary is returned by StartServer when the MinIO binary is missing.
var ErrNoBinary = errors.New("MinIO server binary not found")

// Test credentials of every server started here.
const (
	User     = "cairn-test"
	Password = "cairn-test-secret"
)

// Binary returns the path of the MinIO binary, or an error wrapping
// ErrNoBinary that says how to get one.
func Binary() (string, error) {
	p := os.Getenv("CAIRN_MINIO")
	if p == "" {
		cache := os.Getenv("CAIRN_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("%w: no home directory to find it in (set CAIRN_MINIO)", ErrNoBinary)
			}
			cache = filepath.Join(home, ".cache", "cairn")
		}
		p = filepath.Join(cache, "bin", "minio")
	}
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w at %s: run scripts/minio.sh (or set CAIRN_MINIO)", ErrNoBinary, p)
	}
	return p, nil
}

// InCI reports whether the tests run in CI (CI=true), where a missing
// MinIO must fail the tests instead of skipping them.
func InCI() bool { return os.Getenv("CI") == "true" }

// Server is a running MinIO.
type Server struct {
	// Endpoint is host:port (loopback, plain HTTP).
	Endpoint string
	User     string
	Password string
	// Dir holds the data (and minio.log).
	Dir string

	cmd      *exec.Cmd
	ownDir   bool
	exited   chan struct{}
	stopOnce sync.Once
	log      *os.File
}

// URL returns http://Endpoint.
func (s *Server) URL() string { return "http://" + s.Endpoint }

// StartServer starts MinIO on free loopback ports with its data in dir (a
// new temporary directory if dir is empty) and waits until it is live. Call
// Stop when done. It suits TestMain, where there is no testing.TB.
func StartServer(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	ownDir := false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cairn-minio-"); err != nil {
			return nil, err
		}
		ownDir = true
	}
	var lastErr error
	for try := 0; try < 3; try++ { // a free port may be taken before MinIO binds it
		s, err := start(bin, dir)
		if err == nil {
			s.ownDir = ownDir
			return s, nil
		}
		lastErr = err
	}
	if ownDir {
		os.RemoveAll(dir)
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(bin, dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "minio.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", fmt.Sprintf("127.0.0.1:%d", console), data)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+User,
		"MINIO_ROOT_PASSWORD="+Password,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group so Stop kills MinIO and anything it started; die
	// with the test binary if that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start MinIO: %w", err)
	}
	s := &Server{Endpoint: addr, User: User, Password: Password, Dir: dir, cmd: cmd, exited: make(chan struct{}), log: logf}
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitLive(30 * time.Second); err != nil {
		s.kill()
		return nil, fmt.Errorf("MinIO on %s did not come up: %w; log: %s", addr, err, s.logTail())
	}
	return s, nil
}

func (s *Server) waitLive(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-s.exited:
			return errors.New("the server exited")
		default:
		}
		resp, err := client.Get(s.URL() + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health check: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "minio.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(bytes.ToValidUTF8(b, nil)))
}

// Kill kills the server's process group at once (SIGKILL) and waits for it
// to exit; the data stays. Tests use it to lose the server mid-operation.
func (s *Server) Kill() {
	s.kill()
}

// Pause stops the server's processes (SIGSTOP): connections are still
// accepted by the kernel but nothing answers, as with a hung server.
// Resume (SIGCONT) lets it go on.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, sig)
	}
}

func (s *Server) kill() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
	}
}

// Stop kills the server and removes its directory if StartServer made it.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.kill()
		s.log.Close()
		if s.ownDir {
			os.RemoveAll(s.Dir)
		}
	})
}

// Require returns the MinIO binary path. Without one it fails the test in
// CI and skips it otherwise.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if InCI() {
			t.Fatalf("%v (CI=true: MinIO is required)", err)
		}
		t.Skip(err)
	}
	return bin
}

// StartT starts a server for one test and stops it at cleanup. A missing
// binary fails the test in CI and skips it otherwise.
func StartT(t testing.TB) *Server {
	t.Helper()
	Require(t)
	s, err := StartServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Start is StartT returning the endpoint (host:port, plain HTTP) and the
// credentials, for tests that only need to talk to a server.
func Start(t testing.TB) (endpoint, user, pass string) {
	t.Helper()
	s := StartT(t)
	return s.Endpoint, s.User, s.Password
}

// Shared is one server shared by the tests of a package. Use it from
// TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(s3test.RunShared(m)) }
//
// and call Shared(t) from tests.
var (
	sharedServer *Server
	sharedErr    error
)

// RunShared starts a server, runs the tests and stops it, returning the
// exit code. Without a MinIO binary the tests still run, and Shared skips
// them (or fails them in CI).
func RunShared(m *testing.M) int {
	sharedServer, sharedErr = StartServer("")
	if sharedErr != nil && !errors.Is(sharedErr, ErrNoBinary) {
		fmt.Fprintln(os.Stderr, "s3test:", sharedErr)
		return 1
	}
	if sharedServer != nil {
		defer sharedServer.Stop()
	}
	return m.Run()
}

// Shared returns the server RunShared started, skipping the test (failing
// it in CI) when there is none.
func Shared(t testing.TB) *Server {
	t.Helper()
	if sharedServer == nil {
		err := sharedErr
		if err == nil {
			err = errors.New("s3test.Shared needs s3test.RunShared in TestMain")
		}
		if InCI() {
			t.Fatalf("%v (CI=true: MinIO is required)", err)
		}
		t.Skip(err)
	}
	return sharedServer
}
