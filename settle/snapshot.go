package settle

import (
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
)

// A snapshot is the whole state of a Replayer (its engine and clock), so a long-running settle
// worker restarts from its last settlement instead of replaying every event since the beginning.
// Restoring a snapshot and applying the rest of the log gives exactly the output of applying the
// whole log (TestPropertySnapshotRestoreIsInvisible).
//
// The format is a gob stream of the types below, versioned: the snapshot header, then each
// account in order (one value each, so neither side holds the whole encoding at once); a snapshot taken under another catalogue,
// billing time zone or hold ratio is refused (ErrSnapshotMismatch), since the state depends on them.

const snapshotVersion = 1

// ErrSnapshotMismatch: the snapshot was taken by another format version, billing configuration or
// usage options (deduplication, totals only); replay the log from its start instead.
var ErrSnapshotMismatch = errors.New("settle: snapshot taken with another format or billing configuration")

type snapshot struct {
	Version           int
	ConfigPrint       string
	UsageDeduplicated bool
	UsageTotalsOnly   bool // the engine kept month totals, no series (ReplayOptions.UsageWindows)
	Clock             time.Time
	Lines             int

	Order             []string
	Sorted            bool
	PackIDs           []string
	Earliest, Settled contract.Period
	Dirty, Holding    []string
	Pending           []snapPending
}

type snapPending struct {
	Period   contract.Period
	Accounts []string
}

type snapAccount struct {
	ID        string
	Services  []snapService
	Hold      *snapHold
	Requested *snapHold
	// RequestedIsHold: the requested hold is the current hold (one object in the engine).
	RequestedIsHold bool
	Suspended       bool
}

type snapHold struct {
	ID, ForPeriod, BasisPeriod string
	Amount                     int64
	State                      uint8
	Retries                    int
}

type snapService struct {
	ID          string
	Activated   bool
	ActivatedAt time.Time
	Months      []snapMonth
	Packs       []snapPack
	Overrides   []snapOverride
	Dirty       bool
}

type snapMonth struct {
	Period               contract.Period
	IDs                  []string
	Total                int64
	At, Calls            []int64 // the series
	Sorted               bool
	BilledAmount, Billed int64
}

type snapPack struct {
	ID                    string
	Calls                 int64
	ValidFrom, ValidUntil time.Time
}

type snapOverride struct {
	Account, Service string
	EffectiveFrom    time.Time
	From             []int64
	Prices           []string
}

// configPrint identifies everything of the configuration the state depends on.
func configPrint(cfg Config) string {
	h := sha256.New()
	c := cfg.Catalogue
	fmt.Fprintf(h, "%s|%s|%d|%s|%s\n", c.Currency, c.ChargingStarts.UTC().Format(time.RFC3339Nano), c.FreeCallsPerMonth, cfg.Location, cfg.HoldRatio)
	for _, id := range c.ids {
		s := c.services[id]
		fmt.Fprintf(h, "%s|%s|%s\n", s.ID, s.AvailableFrom.UTC().Format(time.RFC3339Nano), s.RetiredAt.UTC().Format(time.RFC3339Nano))
		for _, p := range s.Prices {
			fmt.Fprintf(h, " %s|%t", p.EffectiveFrom.UTC().Format(time.RFC3339Nano), p.Beta)
			for _, t := range p.Tiers {
				fmt.Fprintf(h, "|%d:%s", t.FromCalls, t.UnitPrice)
			}
			fmt.Fprintln(h)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Snapshot writes the replayer's whole state to w.
func (r *Replayer) Snapshot(w io.Writer) error {
	e := r.engine
	s := snapshot{Version: snapshotVersion, ConfigPrint: configPrint(r.cfg), UsageDeduplicated: e.usageDeduplicated, UsageTotalsOnly: e.windows != nil, Clock: r.clock, Lines: r.stats.Lines,
		Order: e.order, Sorted: e.sorted, Earliest: e.earliest, Settled: e.settled}
	for id := range e.packIDs {
		s.PackIDs = append(s.PackIDs, id)
	}
	sort.Strings(s.PackIDs)
	ids := func(set map[*account]struct{}) []string {
		out := make([]string, 0, len(set))
		for a := range set {
			out = append(out, a.id)
		}
		sort.Strings(out)
		return out
	}
	s.Dirty, s.Holding = ids(e.dirty), ids(e.holding)
	for p, set := range e.pending {
		s.Pending = append(s.Pending, snapPending{Period: p, Accounts: ids(set)})
	}
	sort.Slice(s.Pending, func(i, j int) bool { return s.Pending[i].Period.Before(s.Pending[j].Period) })
	enc := gob.NewEncoder(w)
	if err := enc.Encode(&s); err != nil {
		return err
	}
	for _, id := range e.order {
		a := snapAccountOf(e.accounts[id])
		if err := enc.Encode(&a); err != nil {
			return err
		}
	}
	return nil
}

func snapHoldOf(h *hold) *snapHold {
	if h == nil {
		return nil
	}
	return &snapHold{ID: h.id, ForPeriod: h.forPeriod, BasisPeriod: h.basisPeriod, Amount: int64(h.amount), State: uint8(h.state), Retries: h.retries}
}

func snapAccountOf(a *account) snapAccount {
	out := snapAccount{ID: a.id, Hold: snapHoldOf(a.hold), Suspended: a.suspended}
	if a.requested != nil && a.requested == a.hold {
		out.RequestedIsHold = true
	} else {
		out.Requested = snapHoldOf(a.requested)
	}
	for _, sv := range a.services {
		ss := snapService{ID: sv.id, Activated: sv.activated, ActivatedAt: sv.activatedAt, Dirty: sv.dirty}
		for _, m := range sv.months {
			sm := snapMonth{Period: m.period, Total: m.total, Sorted: m.sorted, BilledAmount: int64(m.billed.amount), Billed: m.billed.calls,
				IDs: m.ids.list(), At: make([]int64, len(m.series)), Calls: make([]int64, len(m.series))}
			for i, tc := range m.series {
				sm.At[i], sm.Calls[i] = tc.at, tc.calls
			}
			ss.Months = append(ss.Months, sm)
		}
		for _, p := range sv.packs() {
			ss.Packs = append(ss.Packs, snapPack{ID: p.id, Calls: p.calls, ValidFrom: p.validFrom, ValidUntil: p.validUntil})
		}
		for _, o := range sv.overrides() {
			so := snapOverride{Account: o.Account, Service: o.Service, EffectiveFrom: o.EffectiveFrom}
			for _, t := range o.Tiers {
				so.From, so.Prices = append(so.From, t.FromCalls), append(so.Prices, t.UnitPrice.String())
			}
			ss.Overrides = append(ss.Overrides, so)
		}
		out.Services = append(out.Services, ss)
	}
	return out
}

// RestoreReplayer rebuilds a replayer from a snapshot; its engine emits through emit. It returns
// ErrSnapshotMismatch (wrapped) when the snapshot was taken with another format or configuration.
func RestoreReplayer(cfg Config, opts ReplayOptions, emit Emit, rd io.Reader) (*Replayer, error) {
	r, err := NewReplayer(cfg, opts, emit)
	if err != nil {
		return nil, err
	}
	var s snapshot
	dec := gob.NewDecoder(rd)
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("settle: read snapshot: %w", err)
	}
	if s.Version != snapshotVersion || s.ConfigPrint != configPrint(cfg) || s.UsageDeduplicated != opts.UsageDeduplicated || s.UsageTotalsOnly != (opts.UsageWindows != nil) {
		return nil, fmt.Errorf("%w (version %d)", ErrSnapshotMismatch, s.Version)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	e := r.engine
	r.clock, r.stats.Lines = s.Clock, s.Lines
	e.order, e.sorted, e.earliest, e.settled = s.Order, s.Sorted, s.Earliest, s.Settled
	for _, id := range s.PackIDs {
		e.packIDs[id] = struct{}{}
	}
	for i := range s.Order {
		var sa snapAccount
		if err := dec.Decode(&sa); err != nil {
			return nil, fmt.Errorf("settle: read snapshot: %w", err)
		}
		if sa.ID != s.Order[i] {
			return nil, fmt.Errorf("settle: snapshot account %d is %q, its order says %q", i, sa.ID, s.Order[i])
		}
		if err := sa.check(s.UsageTotalsOnly); err != nil {
			return nil, fmt.Errorf("settle: snapshot account %q: %w", sa.ID, err)
		}
		a, err := accountOf(sa)
		if err != nil {
			return nil, err
		}
		e.accounts[a.id] = a
	}
	if len(e.accounts) != len(e.order) {
		return nil, errors.New("settle: snapshot lists accounts it does not hold")
	}
	set := func(ids []string) (map[*account]struct{}, error) {
		out := make(map[*account]struct{}, len(ids))
		for _, id := range ids {
			a := e.accounts[id]
			if a == nil {
				return nil, fmt.Errorf("settle: snapshot names unknown account %q", id)
			}
			out[a] = struct{}{}
		}
		return out, nil
	}
	if e.dirty, err = set(s.Dirty); err != nil {
		return nil, err
	}
	if e.holding, err = set(s.Holding); err != nil {
		return nil, err
	}
	for _, p := range s.Pending {
		if e.pending[p.Period], err = set(p.Accounts); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// A snapshot comes from Tally's own database, but a damaged one must be refused, not loop or
// mislead: the checks below hold for every state the engine builds.

// validPeriod: a real month (the zero period only where allowed).
func validPeriod(p contract.Period, zeroOK bool) bool {
	return (zeroOK && p.IsZero()) || (p.Year >= 1970 && p.Year <= 9999 && p.Month >= time.January && p.Month <= time.December)
}

func (s *snapshot) check() error {
	if !validPeriod(s.Earliest, true) || !validPeriod(s.Settled, true) || (s.Earliest.IsZero() && !s.Settled.IsZero()) {
		return fmt.Errorf("settle: snapshot months %v and %v are not valid", s.Earliest, s.Settled)
	}
	if !s.Clock.IsZero() && (s.Clock.Year() < 1970 || s.Clock.Year() > 9999) {
		return fmt.Errorf("settle: snapshot clock %v is not valid", s.Clock)
	}
	seen := make(map[string]bool, len(s.Order))
	for _, id := range s.Order {
		if seen[id] {
			return fmt.Errorf("settle: snapshot lists account %q twice", id)
		}
		seen[id] = true
	}
	for _, p := range s.Pending {
		if !validPeriod(p.Period, false) {
			return fmt.Errorf("settle: snapshot pending month %v is not valid", p.Period)
		}
	}
	return nil
}

func (h *snapHold) check() error {
	if h != nil && (h.Amount < 0 || h.State > uint8(holdFailed) || h.Retries < 0) {
		return fmt.Errorf("hold %q is not valid", h.ID)
	}
	return nil
}

func (sa *snapAccount) check(totalsOnly bool) error {
	if err := sa.Hold.check(); err != nil {
		return err
	}
	if err := sa.Requested.check(); err != nil {
		return err
	}
	for i, ss := range sa.Services {
		if i > 0 && sa.Services[i-1].ID >= ss.ID {
			return fmt.Errorf("services out of order at %q", ss.ID)
		}
		for j, m := range ss.Months {
			if !validPeriod(m.Period, false) || (j > 0 && !ss.Months[j-1].Period.Before(m.Period)) {
				return fmt.Errorf("%s: month %v is not valid or out of order", ss.ID, m.Period)
			}
			if len(m.At) != len(m.Calls) {
				return fmt.Errorf("%s %s: usage series is malformed", ss.ID, m.Period)
			}
			var total int64
			for _, c := range m.Calls {
				if c < 0 || total > total+c {
					return fmt.Errorf("%s %s: usage series is malformed", ss.ID, m.Period)
				}
				total += c
			}
			if (total != m.Total && !(totalsOnly && len(m.Calls) == 0 && m.Total >= 0)) || m.BilledAmount < 0 {
				return fmt.Errorf("%s %s: totals do not add up", ss.ID, m.Period)
			}
		}
		for j, p := range ss.Packs {
			if p.Calls < 0 || (j > 0 && packBefore(&pack{id: p.ID, validUntil: p.ValidUntil}, &pack{id: ss.Packs[j-1].ID, validUntil: ss.Packs[j-1].ValidUntil})) {
				return fmt.Errorf("%s: pack %q is not valid or out of order", ss.ID, p.ID)
			}
		}
		for _, o := range ss.Overrides {
			if len(o.From) != len(o.Prices) {
				return fmt.Errorf("%s: contract price is malformed", ss.ID)
			}
		}
	}
	return nil
}

func holdOf(s *snapHold) *hold {
	if s == nil {
		return nil
	}
	return &hold{id: s.ID, forPeriod: s.ForPeriod, basisPeriod: s.BasisPeriod, amount: cents(s.Amount), state: holdState(s.State), retries: s.Retries}
}

func accountOf(sa snapAccount) (*account, error) {
	a := &account{id: sa.ID, hold: holdOf(sa.Hold), suspended: sa.Suspended}
	if sa.RequestedIsHold {
		a.requested = a.hold
	} else {
		a.requested = holdOf(sa.Requested)
	}
	for _, ss := range sa.Services {
		sv := &serviceState{id: ss.ID, activated: ss.Activated, activatedAt: ss.ActivatedAt, dirty: ss.Dirty}
		for _, sm := range ss.Months {
			m := &monthUsage{period: sm.Period, total: sm.Total, sorted: sm.Sorted, billed: billed{amount: cents(sm.BilledAmount), calls: sm.Billed},
				series: make([]timedCalls, len(sm.At))}
			for i := range sm.At {
				m.series[i] = timedCalls{at: sm.At[i], calls: sm.Calls[i]}
			}
			for _, id := range sm.IDs {
				m.remember(id)
			}
			sv.months = append(sv.months, m)
		}
		for _, p := range ss.Packs {
			sv.terms().packs = append(sv.terms().packs, &pack{id: p.ID, calls: p.Calls, validFrom: p.ValidFrom, validUntil: p.ValidUntil})
		}
		for _, so := range ss.Overrides {
			o := PriceOverride{Account: so.Account, Service: so.Service, EffectiveFrom: so.EffectiveFrom}
			for i, from := range so.From {
				price, err := decimal.NewFromString(so.Prices[i])
				if err != nil {
					return nil, fmt.Errorf("settle: snapshot price %q: %w", so.Prices[i], err)
				}
				o.Tiers = append(o.Tiers, NewTier(from, price))
			}
			sv.terms().overrides = append(sv.terms().overrides, o)
		}
		a.services = append(a.services, sv)
	}
	return a, nil
}
