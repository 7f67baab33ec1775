package worker

import (
	"context"
	"fmt"
	"sync/atomic"
)

// loading tracks whether a topic follower has read its topic to the end once (until then it
// answers from part of the topic: a pack not yet read would price calls as postpaid), and
// whether reading it fails now (it answers from what it read, which may be stale).
type loading struct {
	topic   string
	done    atomic.Bool
	failing atomic.Pointer[error]
}

func (l *loading) caughtUp() { l.done.Store(true) }

// readFailing records the follower's read error (nil: reading works).
func (l *loading) readFailing(err error) {
	if err == nil {
		l.failing.Store(nil)
		return
	}
	l.failing.Store(&err)
}

// Loaded is nil once the topic has been read to its end and while reading it works; a readiness
// check.
func (l *loading) Loaded(context.Context) error {
	if !l.done.Load() {
		return fmt.Errorf("still reading topic %s from its start", l.topic)
	}
	if err := l.failing.Load(); err != nil {
		return fmt.Errorf("reading topic %s fails (answers may be stale): %w", l.topic, *err)
	}
	return nil
}
