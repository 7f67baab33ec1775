package settle

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// ReplayOptions are the knobs of SPEC §5.
type ReplayOptions struct {
	// Grace delays the settlement of month M past the first instant of M+1.
	Grace time.Duration
	// Until, when not zero, advances the clock to that instant after the last line.
	Until time.Time
	// MaxLineBytes bounds one input line (default 1 MiB); longer lines are rejected.
	MaxLineBytes int
	// UsageDeduplicated: the log holds each usage identity once (the settle worker's log, whose
	// usage comes first-copy-only from usage_events), so the engine need not remember every
	// usage id it has seen. Set it only for such a log: a duplicate would be counted.
	UsageDeduplicated bool
	// UsageWindows, when set, makes the engine keep month totals of usage only, never a call's
	// instant, so its memory is bounded by (accounts × services × months), not by calls: at each
	// settlement it reads back the calls of services with prepaid packs, summed per pack window
	// (the settle worker reads them from usage_events). Snapshots record the choice.
	UsageWindows UsageWindows
}

// ReplayStats counts what a replay did.
type ReplayStats struct {
	Lines, Accepted, Rejected, Emitted int
	Settled                            []contract.Period
}

// Rejection is what replay writes for an input it refuses: one JSON object per line.
type Rejection struct {
	Line   int    `json:"line"`
	ID     string `json:"id,omitempty"`
	Type   string `json:"type,omitempty"`
	Reason string `json:"reason"`
}

// Replayer drives an Engine from an event log in log order, running each settlement when the
// log's clock (the largest recordedat seen) reaches it. The services use the same Engine.
type Replayer struct {
	engine *Engine
	cfg    Config
	opts   ReplayOptions
	clock  time.Time
	stats  ReplayStats
}

// NewReplayer builds a replayer whose engine emits through emit.
func NewReplayer(cfg Config, opts ReplayOptions, emit Emit) (*Replayer, error) {
	if opts.Grace < 0 {
		return nil, fmt.Errorf("replay: grace %s is negative", opts.Grace)
	}
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = 1 << 20
	}
	r := &Replayer{cfg: cfg, opts: opts}
	eng, err := New(cfg, func(o cloudevent.Out) error { r.stats.Emitted++; return emit(o) })
	if err != nil {
		return nil, err
	}
	eng.usageDeduplicated, eng.windows = opts.UsageDeduplicated, opts.UsageWindows
	r.engine = eng
	return r, nil
}

// Engine exposes the replayer's engine (for inspection in tests and tools).
func (r *Replayer) Engine() *Engine { return r.engine }

// Stats reports what has been done so far.
func (r *Replayer) Stats() ReplayStats { return r.stats }

// StoredUsage applies a usage event received at recorded exactly as Line applies its log line,
// which line builds: a plain event (contract.PlainUsage) without encoding and decoding it, any
// other through Line. The settle worker feeds usage_events this way.
func (r *Replayer) StoredUsage(u contract.Usage, recorded time.Time, line func() []byte) error {
	if !contract.PlainUsage(u, recorded, r.cfg.Catalogue) {
		return r.Line(line())
	}
	r.stats.Lines++
	return r.applyUsage(u, recorded)
}

// CanSummarize reports whether a batch of usage, whose calls are at or after earliestCall and
// which was received at or before latestReceipt, can be applied as summaries (UsageSummary) with
// exactly the effect of applying its events one by one in any order: the engine keeps totals only
// and takes usage deduplicated, so only a settlement run in the middle of the batch (a receipt at
// or past the next settlement's instant) could tell the orders apart, and none can be.
func (r *Replayer) CanSummarize(earliestCall, latestReceipt time.Time) bool {
	e := r.engine
	if !r.keepsTotalsOfDeduplicatedUsage() || earliestCall.IsZero() {
		return false
	}
	next := e.settled.Next()
	if e.settled.IsZero() {
		next = contract.PeriodOf(earliestCall, r.cfg.Location)
		if !e.earliest.IsZero() && e.earliest.Before(next) {
			next = e.earliest
		}
	}
	return latestReceipt.Before(next.End(r.cfg.Location).Add(r.opts.Grace))
}

// UsageSummary applies the events s describes as one event of s.Calls calls at s.First, when every
// one of them is plain (contract.UsageSummary.Plain) and they are of one month; otherwise it applies nothing and reports
// false, and the caller applies them one by one. Call it only for a batch CanSummarize allowed.
func (r *Replayer) UsageSummary(s contract.UsageSummary) (bool, error) {
	loc := r.cfg.Location
	if !r.keepsTotalsOfDeduplicatedUsage() || !s.Plain(r.cfg.Catalogue) || contract.PeriodOf(s.First, loc) != contract.PeriodOf(s.Last, loc) {
		return false, nil
	}
	r.stats.Lines += int(s.Events)
	r.stats.Accepted += int(s.Events)
	if s.LastReceived.After(r.clock) {
		r.clock = s.LastReceived // Advance would settle nothing: CanSummarize said so
	}
	return true, r.engine.Apply(Usage{contract.Usage{Account: s.Account, Service: s.Service, Calls: s.Calls, Time: s.First}}, r.clock)
}

// keepsTotalsOfDeduplicatedUsage: the engine keeps month totals only and is given each usage
// identity once, so the order in which usage reaches it does not matter between settlements.
func (r *Replayer) keepsTotalsOfDeduplicatedUsage() bool {
	return r.engine.windows != nil && r.engine.usageDeduplicated
}

func (r *Replayer) applyUsage(u contract.Usage, recorded time.Time) error {
	if recorded.After(r.clock) {
		if err := r.Advance(recorded); err != nil {
			return err
		}
	}
	r.stats.Accepted++
	return r.engine.Apply(Usage{u}, r.clock)
}

// Line applies one input line. A line that is not a valid input returns a *Rejection and
// changes nothing; other errors come from emitting.
func (r *Replayer) Line(raw []byte) error {
	r.stats.Lines++
	n := r.stats.Lines
	// Most lines are usage of the common shape: decode those without reflection (the answer is
	// the general path's, FuzzDecodeUsageMatchesParseUsage holds it to that).
	if u, recorded, ok := contract.DecodeLoggedUsage(raw, r.cfg.Catalogue); ok {
		return r.applyUsage(u, recorded)
	}
	in, recorded, ev, err := DecodeLine(raw, r.cfg.Catalogue)
	if err != nil {
		return r.reject(n, ev, err)
	}
	if recorded.After(r.clock) {
		if err := r.Advance(recorded); err != nil {
			return err
		}
	}
	r.stats.Accepted++
	return r.engine.Apply(in, r.clock)
}

// DecodeLine validates one line of a log as the billing core reads it: the input, the instant
// it was recorded (its recordedat, else its time), and its envelope (for a rejection's id and
// type). An error is the reason the line is refused. The accounts API runs what it is asked to
// publish through this, so what it accepts billing applies.
func DecodeLine(raw []byte, cat *Catalogue) (Input, time.Time, cloudevent.Event, error) {
	ev, err := cloudevent.Decode(raw)
	if err != nil {
		return nil, time.Time{}, ev, err
	}
	recorded := ev.RecordedAt
	if recorded.IsZero() {
		recorded = ev.Time
	}
	if recorded.IsZero() {
		return nil, time.Time{}, ev, errors.New("time is missing (and no recordedat): the event has no instant")
	}
	if ev.Time.IsZero() {
		ev.Time = recorded
	}
	in, err := DecodeInput(ev, recorded, cat)
	return in, recorded, ev, err
}

func (r *Replayer) reject(line int, ev cloudevent.Event, err error) error {
	r.stats.Rejected++
	return &Rejection{Line: line, ID: ev.ID, Type: ev.Type, Reason: err.Error()}
}

func (e *Rejection) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Advance moves the clock to t (never back) and runs every settlement due by then, oldest first:
// month M settles at the first instant of M+1 plus the grace period.
func (r *Replayer) Advance(t time.Time) error {
	if t.After(r.clock) {
		r.clock = t
	}
	for {
		next := r.engine.Settled()
		if next.IsZero() {
			next = r.engine.Earliest()
			if next.IsZero() {
				return nil
			}
		} else {
			next = next.Next()
		}
		due := next.End(r.cfg.Location).Add(r.opts.Grace)
		if r.clock.Before(due) {
			return nil
		}
		if err := r.engine.Settle(next, due); err != nil {
			return err
		}
		r.stats.Settled = append(r.stats.Settled, next)
	}
}

// Replay reads CloudEvents, one JSON object per line, from in and writes what Tally emits, one
// CloudEvent per line, to out; each rejected line goes to rejects as a JSON Rejection. It streams:
// memory grows with the billing state, not with the log.
func Replay(in io.Reader, out, rejects io.Writer, cfg Config, opts ReplayOptions) (ReplayStats, error) {
	bw := bufio.NewWriterSize(out, 1<<16)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	rep, err := NewReplayer(cfg, opts, func(o cloudevent.Out) error { return enc.Encode(o) })
	if err != nil {
		return ReplayStats{}, err
	}
	rejEnc := json.NewEncoder(rejects)
	rejEnc.SetEscapeHTML(false)
	br := bufio.NewReaderSize(in, 1<<16)
	for {
		line, tooLong, rerr := readLine(br, rep.opts.MaxLineBytes)
		if len(bytes.TrimSpace(line)) > 0 || tooLong {
			var lerr error
			if tooLong {
				rep.stats.Lines++
				lerr = rep.reject(rep.stats.Lines, cloudevent.Event{}, fmt.Errorf("line is longer than %d bytes", rep.opts.MaxLineBytes))
			} else {
				lerr = rep.Line(line)
			}
			var rej *Rejection
			switch {
			case errors.As(lerr, &rej):
				if err := rejEnc.Encode(rej); err != nil {
					return rep.stats, fmt.Errorf("write rejection: %w", err)
				}
			case lerr != nil:
				return rep.stats, lerr
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rep.stats, fmt.Errorf("read input: %w", rerr)
		}
	}
	if !opts.Until.IsZero() {
		if err := rep.Advance(opts.Until); err != nil {
			return rep.stats, err
		}
	}
	if err := bw.Flush(); err != nil {
		return rep.stats, fmt.Errorf("write output: %w", err)
	}
	return rep.stats, nil
}

// readLine reads one '\n'-terminated line. A line longer than max is consumed and reported as
// tooLong instead of being buffered whole.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > max {
			tooLong = true
			buf = buf[:0]
		} else if !tooLong {
			buf = append(buf, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if tooLong {
			return nil, true, err
		}
		return buf, false, err
	}
}
