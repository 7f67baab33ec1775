package ingest

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// breaker answers for Kafka while it is down, so a gateway learns in microseconds, not after the
// publish timeout, that it must retry later, and requests do not pile up waiting on a dead
// broker. After a failed publish it opens: requests are refused at once until RetryAfter has
// passed; then one request is let through as a trial, whose success closes it again. One log
// line opens a failing spell and one closes it, with the count of requests refused meanwhile.
type breaker struct {
	retryAfter time.Duration
	now        func() time.Time

	mu       sync.Mutex
	open     bool
	openedAt time.Time
	trial    bool // a trial publish is in flight
	refused  int
	lastErr  error
}

var errKafkaDown = errors.New("the usage log is not acknowledging writes")

// allow reports whether a request may publish now; trial says it is the one probing Kafka.
func (b *breaker) allow() (ok, trial bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true, false
	}
	if !b.trial && !b.now().Before(b.openedAt.Add(b.retryAfter)) {
		b.trial = true
		return true, true
	}
	b.refused++
	return false, false
}

// done records a publish's outcome; opened and closed say whether this changed the state (the
// caller logs those, once per spell), refused how many requests the spell refused.
func (b *breaker) done(err error, trial bool) (opened, closed bool, refused int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if trial {
		b.trial = false
	}
	if err != nil {
		b.lastErr = err
		b.openedAt = b.now()
		if !b.open {
			b.open, b.refused = true, 0
			return true, false, 0
		}
		return false, false, 0
	}
	if b.open {
		b.open = false
		return false, true, b.refused
	}
	return false, false, 0
}

// abandon records a publish whose outcome says nothing about Kafka (its client went away): the
// state stays as it was, and a trial may be tried again.
func (b *breaker) abandon(trial bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if trial {
		b.trial = false
	}
}

// ready is nil while the breaker is closed; a readiness check.
func (b *breaker) ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return fmt.Errorf("%w since %s (last error: %v)", errKafkaDown, b.openedAt.Format(time.RFC3339), b.lastErr)
	}
	return nil
}
