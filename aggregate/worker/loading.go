package worker

import (
	"context"
	"fmt"
	"sync/atomic"
)

// loading tracks whether a topic follower has read its topic to the end once: until then it
// answers from part of the topic (a pack not yet read would price calls as postpaid).
type loading struct {
	topic string
	done  atomic.Bool
}

func (l *loading) caughtUp() { l.done.Store(true) }

// Loaded is nil once the topic has been read to its end; a readiness check.
func (l *loading) Loaded(context.Context) error {
	if !l.done.Load() {
		return fmt.Errorf("still reading topic %s from its start", l.topic)
	}
	return nil
}
