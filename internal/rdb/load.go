package rdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Listen is the address the temporary master listens on and the
	// target is told to connect to. Empty: the local address this
	// machine uses to reach the target, on a port the system chooses. A
	// host of 0.0.0.0 or :: listens everywhere and advertises that local
	// address.
	Listen string
	// Size and Write produce the RDB (Write may be called once).
	Size  int64
	Write func(ctx context.Context, w io.Writer) error
	// Version is the RDB format version if known (0: not checked). A
	// target too old to read it is refused before it is touched.
	Version int
	// Timeout is how long the restore may make no progress.
	Timeout time.Duration
	// Log receives progress lines; may be nil.
	Log func(format string, args ...any)
}

// LoadResult describes a finished Load.
type LoadResult struct {
	Advertised string // host:port the target replicated from
	Peer       string // the target's address as seen by the master
	// Keys is the target's keyspace once the sync finished, read while it
	// was still a replica (so no key had expired yet).
	Keys map[int]DBKeys
	RDB  *Info // the RDB as sent
	// Denied counts connections to cairn's port that asked for the RDB
	// without the one-time password (and got nothing).
	Denied int
}

// RefusedTargetError explains why a target was not touched.
type RefusedTargetError struct{ Reason string }

func (e *RefusedTargetError) Error() string { return "the target was not changed: " + e.Reason }

// minServer maps RDB versions to the first Redis release that reads them.
var minServer = map[int]string{6: "2.6", 7: "3.2", 8: "4.0", 9: "5.0", 10: "7.0", 11: "7.2", 12: "7.4"}

// Load replaces the data set of the target server with an RDB, over the
// replication protocol: cairn listens as a temporary master, the target
// runs REPLICAOF towards it, receives and loads the RDB (flushing what it
// held), and once INFO shows the link up and the sync finished, its key
// counts are read and REPLICAOF NO ONE makes it a master again. Its
// configuration is not changed. Targets that are replicas, that have
// replicas of their own, or that run in cluster mode are refused.
func Load(ctx context.Context, target *Client, o LoadOptions) (res *LoadResult, err error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	info, err := target.Info("")
	if err != nil {
		return nil, fmt.Errorf("redis %s: INFO: %w", target.Addr(), err)
	}
	if err := checkTarget(info, o.Version); err != nil {
		return nil, err
	}
	if target.opts.TLS != nil {
		// The replication link would carry every secret in the clear (or,
		// with tls-replication, fail): cairn's master does not speak TLS.
		return nil, &RefusedTargetError{"it was reached over TLS, and cairn's temporary master serves the RDB without TLS; write the RDB with --redis-rdb-dir and start the server on it instead"}
	}

	listen, advertiseHost, err := listenAddress(o.Listen, target)
	if err != nil {
		return nil, err
	}
	// The target authenticates to cairn's master with a one-time password,
	// set as its masterauth for the restore and put back afterwards:
	// whoever else connects to the port gets nothing.
	var pw [24]byte
	_, _ = rand.Read(pw[:])
	password := hex.EncodeToString(pw[:])
	oldAuth, err := setMasterAuth(target, password)
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := resetMasterAuth(target, oldAuth); rerr != nil {
			err = errors.Join(err, fmt.Errorf("redis %s: put back masterauth: %w (set it by hand with CONFIG SET masterauth)", target.Addr(), rerr))
		}
	}()
	m, err := newMaster(ctx, listen, password, o.Size, o.Timeout, o.Write)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	port := strconv.Itoa(m.Addr().Port)
	res = &LoadResult{Advertised: net.JoinHostPort(advertiseHost, port)}
	logf("cairn serves the RDB at %s, to the target only (it authenticates with a one-time password)", res.Advertised)

	if _, err := target.Do("REPLICAOF", advertiseHost, port); err != nil {
		var se *ServerError
		if errors.As(err, &se) && strings.Contains(strings.ToLower(se.Msg), "unknown command") {
			_, err = target.Do("SLAVEOF", advertiseHost, port)
		}
		if errors.As(err, &se) && se.Code() == "NOPERM" {
			return nil, fmt.Errorf("redis %s refused REPLICAOF (%w): the user needs +replicaof, +info and +config|get, +config|set; the target was not changed", target.Addr(), err)
		}
		if err != nil {
			return nil, fmt.Errorf("redis %s: REPLICAOF %s %s: %w", target.Addr(), advertiseHost, port, err)
		}
	}
	logf("the target replicates from cairn at %s", res.Advertised)
	promoted := false
	defer func() {
		if promoted {
			return
		}
		// Never leave the target following a master that is going away.
		if perr := replicaOfNoOne(target); perr != nil {
			err = fmt.Errorf("%w; REPLICAOF NO ONE failed too (%v): run it on the target by hand", err, perr)
			return
		}
		err = fmt.Errorf("%w; the target was switched back to a master (REPLICAOF NO ONE) and may have lost its previous data set", err)
	}()

	var last string
	progressAt := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st := m.Status()
		if st.Err != nil {
			return nil, st.Err
		}
		if st.Syncs > 1 {
			return nil, fmt.Errorf("redis %s asked for the RDB a second time: it failed to receive or load it (see its log)", target.Addr())
		}
		info, err := target.Info("")
		if err != nil {
			return nil, fmt.Errorf("redis %s: INFO: %w", target.Addr(), err)
		}
		if st.Done && info["master_link_status"] == "up" && info["master_sync_in_progress"] == "0" &&
			info["master_port"] == port && info["loading"] != "1" {
			res.Keys, res.RDB, res.Peer, res.Denied = Keyspace(info), st.Info, st.Peer, st.Denied
			break
		}
		sig := fmt.Sprint(st.Syncs, st.Sent, st.Done, info["master_sync_read_bytes"], info["loading_loaded_bytes"], info["master_link_status"], info["loading"])
		if sig != last {
			last, progressAt = sig, time.Now()
		}
		if time.Since(progressAt) > o.Timeout {
			if st.Syncs == 0 {
				return nil, fmt.Errorf("redis %s did not connect to cairn at %s within %s: that address must be reachable from the target (see --redis-listen)", target.Addr(), res.Advertised, o.Timeout)
			}
			return nil, fmt.Errorf("the restore made no progress for %s (%d bytes sent, target link %s)", o.Timeout, st.Sent, info["master_link_status"])
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	if _, err := target.Do("REPLICAOF", "NO", "ONE"); err != nil {
		return nil, fmt.Errorf("redis %s: REPLICAOF NO ONE: %w", target.Addr(), err)
	}
	promoted = true
	return res, nil
}

// setMasterAuth sets the target's masterauth and returns the old value.
func setMasterAuth(target *Client, password string) (string, error) {
	v, err := target.Do("CONFIG", "GET", "masterauth")
	if err != nil {
		return "", configRefused(target, err)
	}
	old := ""
	if a, ok := v.([]any); ok && len(a) == 2 {
		old, _ = a[1].(string)
	}
	if _, err := target.Do("CONFIG", "SET", "masterauth", password); err != nil {
		return "", configRefused(target, err)
	}
	return old, nil
}

func configRefused(target *Client, err error) error {
	return &RefusedTargetError{fmt.Sprintf("CONFIG GET/SET masterauth failed (%v): cairn protects the transfer with a one-time password set as the target's masterauth; the user needs +config|get and +config|set", err)}
}

// resetMasterAuth puts back the target's masterauth.
func resetMasterAuth(target *Client, old string) error {
	return doEvenAfterInterrupt(target, "CONFIG", "SET", "masterauth", old)
}

// replicaOfNoOne promotes the target back to a master.
func replicaOfNoOne(target *Client) error {
	return doEvenAfterInterrupt(target, "REPLICAOF", "NO", "ONE")
}

// doEvenAfterInterrupt runs a command that puts the target back as it
// was: on the restore's connection, or on a new one if that is gone (as
// after an interrupt).
func doEvenAfterInterrupt(target *Client, args ...string) error {
	if target.ctx.Err() == nil {
		if _, err := target.Do(args...); err == nil {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, target.opts)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Do(args...)
	return err
}

// checkTarget refuses targets that a replication restore would harm or
// that cannot read the RDB.
func checkTarget(info map[string]string, version int) error {
	switch {
	case info["role"] == "slave":
		return &RefusedTargetError{fmt.Sprintf("it is a replica of %s:%s; restore into its master, or detach it first with REPLICAOF NO ONE", info["master_host"], info["master_port"])}
	case info["connected_slaves"] != "" && info["connected_slaves"] != "0":
		return &RefusedTargetError{fmt.Sprintf("it has %s replica(s), which would resynchronize from it; detach them or restore into a server without replicas", info["connected_slaves"])}
	case info["cluster_enabled"] == "1":
		return &RefusedTargetError{"it runs in cluster mode, where REPLICAOF cannot load a data set; write the RDB with --redis-rdb-dir instead"}
	case info["loading"] == "1":
		return &RefusedTargetError{"it is loading a data set right now"}
	}
	if want, ok := minServer[version]; ok && info["redis_version"] != "" && versionLess(info["redis_version"], want) {
		return &RefusedTargetError{fmt.Sprintf("it runs Redis %s, which cannot read RDB version %d (Redis %s or later can)", info["redis_version"], version, want)}
	}
	return nil
}

// versionLess compares dotted versions numerically ("7.0.15" < "7.4").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// listenAddress picks where the master listens and what the target is told.
func listenAddress(listen string, target *Client) (addr, advertise string, err error) {
	local := ""
	if ta, ok := target.LocalAddr().(*net.TCPAddr); ok {
		local = ta.IP.String()
	}
	if listen == "" {
		return net.JoinHostPort(local, "0"), local, nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", "", fmt.Errorf("invalid listen address %q: want HOST:PORT (port 0 picks a free one)", listen)
	}
	advertise = host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		advertise = local
	}
	return net.JoinHostPort(host, port), advertise, nil
}
