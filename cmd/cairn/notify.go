package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/profile"
)

// notifyTimeout bounds each ping: monitoring must never hold up a backup.
const notifyTimeout = 10 * time.Second

// pinger pings a monitoring URL (a profile's [notify] url) with the
// healthchecks.io convention. A ping that fails is a warning, never a
// failed backup.
type pinger struct {
	url    string
	client *http.Client
	warn   func(error)
}

func newPinger(url string, warn func(error)) *pinger {
	if url == "" {
		return nil
	}
	return &pinger{url: strings.TrimRight(url, "/"), client: &http.Client{Timeout: notifyTimeout}, warn: warn}
}

// start says a backup began.
func (p *pinger) start(ctx context.Context) {
	if p != nil {
		p.ping(ctx, "/start", "")
	}
}

// finish reports the outcome: success for exit 0, else failure with the
// error line (a partial snapshot is a failure to look at).
func (p *pinger) finish(ctx context.Context, code int, err error) {
	if p == nil {
		return
	}
	if code == exitOK {
		p.ping(ctx, "", "")
		return
	}
	msg := fmt.Sprintf("exit %d", code)
	if err != nil {
		msg += ": " + err.Error()
	}
	p.ping(ctx, "/fail", msg)
}

func (p *pinger) ping(ctx context.Context, suffix, body string) {
	// A backup that was interrupted still reports: the ping gets its own
	// short deadline instead of the command's context.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+suffix, strings.NewReader(body))
	if err != nil {
		p.warn(fmt.Errorf("notify: %w", err))
		return
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := p.client.Do(req)
	if err != nil {
		p.warn(fmt.Errorf("notify %s: %w", profile.RedactURL(p.url+suffix), err))
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		p.warn(fmt.Errorf("notify %s: %s", profile.RedactURL(p.url+suffix), resp.Status))
	}
}
