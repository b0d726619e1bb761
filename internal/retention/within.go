package retention

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseWithin reads a --keep-within duration. restic's form, whole numbers
// with the units y (years), m (months), d (days) and h (hours) such as
// "2y5m7d3h", is tried first: years and months are calendar months, days
// are 24 hours. Anything else is a Go duration ("36h", "90m0s", "1h30m0s").
// As in restic, "m" means months: "90m" is 90 months, not 90 minutes; write
// minutes the Go way with a seconds part ("90m0s").
func ParseWithin(s string) (months int, d time.Duration, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, 0, errors.New("empty duration")
	}
	if months, d, ok := parseResticDuration(s); ok {
		return months, d, nil
	}
	d, err = time.ParseDuration(s)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid duration %q: use restic's form such as 2y5m7d3h (m = months) or a Go duration such as 36h", s)
	}
	if d < 0 {
		return 0, 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return 0, d, nil
}

// parseResticDuration parses ([0-9]+[ymdh])+; repeated units add up.
func parseResticDuration(s string) (months int, d time.Duration, ok bool) {
	const maxHours = int64(1<<63-1) / int64(time.Hour)
	var hours int64
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 || i == len(s) {
			return 0, 0, false
		}
		n, err := strconv.ParseInt(s[:i], 10, 32)
		if err != nil {
			return 0, 0, false
		}
		switch s[i] {
		case 'y':
			months += 12 * int(n)
		case 'm':
			months += int(n)
		case 'd':
			hours += 24 * n
		case 'h':
			hours += n
		default:
			return 0, 0, false
		}
		if hours > maxHours {
			return 0, 0, false
		}
		s = s[i+1:]
	}
	return months, time.Duration(hours) * time.Hour, true
}

// formatWithin writes months and d the way ParseWithin reads them:
// "1y2m7d3h"; a part below whole hours is written as a Go duration.
func formatWithin(months int, d time.Duration) string {
	var b strings.Builder
	if y := months / 12; y != 0 {
		fmt.Fprintf(&b, "%dy", y)
	}
	if m := months % 12; m != 0 {
		fmt.Fprintf(&b, "%dm", m)
	}
	if d%time.Hour != 0 {
		if b.Len() > 0 {
			b.WriteString("+")
		}
		b.WriteString(d.String())
		return b.String()
	}
	h := int64(d / time.Hour)
	if days := h / 24; days != 0 {
		fmt.Fprintf(&b, "%dd", days)
	}
	if h%24 != 0 {
		fmt.Fprintf(&b, "%dh", h%24)
	}
	if b.Len() == 0 {
		return "0h"
	}
	return b.String()
}
