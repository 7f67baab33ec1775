package settle

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
)

// Source is the CloudEvents source of every event Tally emits.
const Source = "tally"

// Config configures the billing engine.
type Config struct {
	Catalogue *Catalogue
	// Location is the billing time zone: it decides which month an instant belongs to.
	Location *time.Location
	// HoldRatio scales the hold for the next month (1 = 100% of the month's list-price usage).
	HoldRatio decimal.Decimal
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Catalogue == nil {
		errs = append(errs, errors.New("settle: catalogue is nil"))
	}
	if c.Location == nil {
		errs = append(errs, errors.New("settle: billing location is nil"))
	}
	if c.HoldRatio.IsNegative() {
		errs = append(errs, fmt.Errorf("settle: hold ratio %s is negative", c.HoldRatio))
	}
	return errors.Join(errs...)
}

// Emit receives each event the engine emits, in emission order.
type Emit func(cloudevent.Out) error

// Engine is the pure billing state machine of SPEC §2–§4: it folds input events and settles
// months, emitting bills, holds and account-status events. It never reads a clock: every instant
// it uses comes from the events or from the caller. Not safe for concurrent use.
type Engine struct {
	cfg       Config
	unitRatio bool // the hold ratio is 1: the hold is the list-price usage itself
	emit      Emit
	accounts  map[string]*account
	order     []string // account ids; sorted when sorted is true
	sorted    bool
	packIDs   packIDs
	// earliest is the earliest month any input was seen for; settled the last month settled.
	earliest, settled contract.Period
	// dirty accounts have changes that may re-price already settled months.
	dirty map[*account]struct{}
	// pending lists, per month not yet settled, the accounts with usage in it; holding lists the
	// accounts with a hold to release or a suspension. With dirty, they are exactly the accounts
	// a settlement must visit, so months without activity cost nothing.
	pending map[contract.Period]map[*account]struct{}
	holding map[*account]struct{}
	// usageDeduplicated: the caller passes each usage identity once; ids are not remembered.
	usageDeduplicated bool
	// windows, when set, reads back the calls of (account, service) months with prepaid packs
	// at settlement; the engine then keeps month totals only, never a call's instant.
	windows UsageWindows
}

// WindowRequest asks for the calls of (Account, Service) before End, summed per window between
// consecutive Bounds, each sum as one CallsAt at an instant inside its window. Bounds are sorted
// and hold every instant where the set of valid packs changes and every month start up to End, so
// no window crosses either.
type WindowRequest struct {
	Account, Service string
	Bounds           []time.Time
	End              time.Time
}

// UsageWindows answers window requests, one slice of calls per request, in order. It must count
// exactly the usage the engine was given (the same events, each identity once): the engine checks
// each month's sum against its total and fails the settlement when they differ.
type UsageWindows func(reqs []WindowRequest) ([][]CallsAt, error)

// windowChunk is how many accounts' windows a settlement reads back at a time, which bounds the
// calls held in memory.
const windowChunk = 4096

type account struct {
	id        string
	services  []*serviceState // by service id: bill lines go in this order
	hold      *hold           // the current hold: the last one a settlement requested
	requested *hold           // the hold requested at the previous settlement, to release at the next
	suspended bool
}

type hold struct {
	id          string
	amount      cents
	forPeriod   string
	basisPeriod string
	state       holdState
	retries     int // requests re-sent after a recharge
}

type holdState uint8

const (
	holdPending holdState = iota
	holdPlaced
	holdFailed
)

// serviceState is one (account, service). Slices rather than maps keep the state of a million
// accounts cheap to hold and to scan for the garbage collector.
type serviceState struct {
	id          string
	activatedAt time.Time
	months      []*monthUsage // by period
	deal        *deal         // nil for most: packs and price overrides are rare
	activated   bool
	dirty       bool
}

// deal is what an (account, service) bought or negotiated: held apart, since a million
// accounts without it would otherwise carry two empty slices each.
type deal struct {
	packs     []*pack // by (validUntil, id)
	overrides []PriceOverride
}

func (s *serviceState) packs() []*pack {
	if s.deal == nil {
		return nil
	}
	return s.deal.packs
}

func (s *serviceState) overrides() []PriceOverride {
	if s.deal == nil {
		return nil
	}
	return s.deal.overrides
}

// terms is the deal, made on first use.
func (s *serviceState) terms() *deal {
	if s.deal == nil {
		s.deal = &deal{}
	}
	return s.deal
}

// billed is what has been charged for one (month, service): the amount, and the calls the last
// line or adjustment showed.
type billed struct {
	amount cents
	calls  int64
}

type pack struct {
	id                    string
	calls                 int64
	validFrom, validUntil time.Time
}

// monthUsage is one (account, service, month): the ids counted so far and the calls by instant.
type monthUsage struct {
	period contract.Period
	ids    *idSet // nil until an id is remembered (never, where usage arrives deduplicated)
	total  int64
	series []timedCalls
	billed billed // what the bills said for this month so far
	sorted bool
}

// remember adds a usage id, reporting false for one seen before.
func (m *monthUsage) remember(id string) bool {
	if m.ids == nil {
		m.ids = &idSet{}
	}
	return m.ids.add(id)
}

type timedCalls struct {
	at    int64 // unix nanoseconds
	calls int64
}

// idSet remembers event ids; a short slice until it grows, then a map, because most months of
// most (account, service) hold few events in replay and the benchmark.
type idSet struct {
	few  []string
	many map[string]struct{}
}

func (s *idSet) add(id string) bool {
	if s.many != nil {
		if _, ok := s.many[id]; ok {
			return false
		}
		s.many[id] = struct{}{}
		return true
	}
	if slices.Contains(s.few, id) {
		return false
	}
	if len(s.few) < 16 {
		s.few = append(s.few, id)
		return true
	}
	s.many = make(map[string]struct{}, 64)
	for _, x := range s.few {
		s.many[x] = struct{}{}
	}
	s.few = nil
	s.many[id] = struct{}{}
	return true
}

// list returns the ids (any order restores the set).
func (s *idSet) list() []string {
	if s == nil {
		return nil
	}
	if s.many == nil {
		return s.few
	}
	out := make([]string, 0, len(s.many))
	for id := range s.many {
		out = append(out, id)
	}
	sort.Strings(out) // a set: any order restores it, a sorted one keeps snapshots byte-stable
	return out
}

// New builds an engine that emits through emit.
func New(cfg Config, emit Emit) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if emit == nil {
		return nil, errors.New("settle: emit is nil")
	}
	return &Engine{
		cfg: cfg, emit: emit, unitRatio: cfg.HoldRatio.Equal(decimal.NewFromInt(1)),
		accounts: map[string]*account{}, packIDs: packIDs{}, dirty: map[*account]struct{}{},
		pending: map[contract.Period]map[*account]struct{}{}, holding: map[*account]struct{}{},
		sorted: true,
	}, nil
}

// Settled is the last month settled (zero when none).
func (e *Engine) Settled() contract.Period { return e.settled }

// Earliest is the earliest month an input was seen for (zero when none).
func (e *Engine) Earliest() contract.Period { return e.earliest }

func (e *Engine) account(id string) *account {
	a := e.accounts[id]
	if a == nil {
		a = &account{id: id}
		e.accounts[id] = a
		if n := len(e.order); n > 0 && e.order[n-1] > id {
			e.sorted = false
		}
		e.order = append(e.order, id)
	}
	return a
}

func (a *account) service(id string) *serviceState {
	i, found := slices.BinarySearchFunc(a.services, id, func(s *serviceState, id string) int { return strings.Compare(s.id, id) })
	if !found {
		a.services = slices.Insert(a.services, i, &serviceState{id: id})
	}
	return a.services[i]
}

func (e *Engine) see(t time.Time) {
	if p := contract.PeriodOf(t, e.cfg.Location); e.earliest.IsZero() || p.Before(e.earliest) {
		e.earliest = p
	}
}

// markDirty notes that (a, s) may need re-pricing of months already settled.
func (e *Engine) markDirty(a *account, s *serviceState) {
	if e.settled.IsZero() {
		return
	}
	s.dirty = true
	e.dirty[a] = struct{}{}
}

// Apply folds one validated input event; at is the instant it is processed (the log's clock),
// used as the time of any event it emits.
func (e *Engine) Apply(in Input, at time.Time) error {
	switch in := in.(type) {
	case Usage:
		e.applyUsage(in)
	case Activation:
		e.see(in.At)
		a := e.account(in.Account)
		s := a.service(in.Service)
		if !s.activated {
			s.activated, s.activatedAt = true, in.At
			e.markDirty(a, s)
		}
	case PackPurchase:
		if !e.packIDs.first(in.PackID) {
			return nil
		}
		e.see(in.ValidFrom)
		a := e.account(in.Account)
		s := a.service(in.Service)
		p := &pack{id: in.PackID, calls: in.Calls, validFrom: in.ValidFrom, validUntil: in.ValidUntil}
		t := s.terms()
		i := sort.Search(len(t.packs), func(i int) bool { return packBefore(p, t.packs[i]) })
		t.packs = slices.Insert(t.packs, i, p)
		e.markDirty(a, s)
	case PriceOverride:
		a := e.account(in.Account)
		s := a.service(in.Service)
		t := s.terms()
		t.overrides = append(t.overrides, in)
		e.markDirty(a, s)
	case HoldReply:
		return e.applyHoldReply(in, at)
	case Recharge:
		return e.applyRecharge(in, at)
	case Tick:
	default:
		return fmt.Errorf("settle: unknown input %T", in)
	}
	return nil
}

func packBefore(p, q *pack) bool {
	if !p.validUntil.Equal(q.validUntil) {
		return p.validUntil.Before(q.validUntil)
	}
	return p.id < q.id
}

func (e *Engine) applyUsage(u Usage) {
	p := contract.PeriodOf(u.Time, e.cfg.Location)
	e.see(u.Time)
	a := e.account(u.Account)
	s := a.service(u.Service)
	m := s.month(p)
	if m == nil {
		m = s.addMonth(p)
		if e.settled.IsZero() || e.settled.Before(p) {
			set := e.pending[p]
			if set == nil {
				set = map[*account]struct{}{}
				e.pending[p] = set
			}
			set[a] = struct{}{}
		}
	}
	if !e.usageDeduplicated && !m.remember(u.ID) {
		return // a duplicate: the first received counts
	}
	if e.windows != nil {
		m.total += u.Calls // instants are read back at settlement, for services with packs
	} else {
		m.add(u.Time.UnixNano(), u.Calls)
	}
	if !e.settled.IsZero() && !e.settled.Before(p) {
		e.markDirty(a, s) // a late call: its month was settled already
	}
}

// trackHolding keeps the holding set in step with the account's hold and status.
func (e *Engine) trackHolding(a *account) {
	if a.requested != nil || a.suspended {
		e.holding[a] = struct{}{}
	} else {
		delete(e.holding, a)
	}
}

func (e *Engine) applyHoldReply(r HoldReply, at time.Time) error {
	a := e.accounts[r.Account]
	if a == nil || a.hold == nil || a.hold.id != r.HoldID || a.hold.state != holdPending {
		return nil // not the account's current, unanswered hold: changes nothing
	}
	h := a.hold
	defer e.trackHolding(a)
	if r.Placed {
		h.state = holdPlaced
		if a.suspended {
			a.suspended = false
			return e.emitStatus(contract.AccountResumedType, a, h, contract.ReasonHoldPlaced, e.at(at))
		}
		return nil
	}
	h.state = holdFailed
	if !a.suspended {
		a.suspended = true
		return e.emitStatus(contract.AccountSuspendedType, a, h, contract.ReasonHoldFailed, e.at(at))
	}
	return nil
}

func (e *Engine) applyRecharge(r Recharge, at time.Time) error {
	a := e.accounts[r.Account]
	if a == nil || !a.suspended || a.hold == nil || a.hold.state != holdFailed {
		return nil
	}
	h := a.hold
	h.retries++
	h.state = holdPending
	return e.emitHoldRequested(a, h, e.at(at))
}

// attemptSuffix names the n-th retry of a hold in the ids of events that follow it.
func (h *hold) attemptSuffix() string {
	if h.retries == 0 {
		return ""
	}
	return fmt.Sprintf(":%d", h.retries)
}

// at formats an instant for an emitted event, in the billing time zone.
func (e *Engine) at(t time.Time) string { return cloudevent.FormatTime(t.In(e.cfg.Location)) }

func (e *Engine) emitStatus(typ string, a *account, h *hold, reason string, at string) error {
	id := typ + ":" + h.id + h.attemptSuffix()
	return e.emit(cloudevent.NewOut(Source, typ, id, a.id, at, contract.AccountStatus{Account: a.id, Reason: reason}))
}

func (e *Engine) emitHoldRequested(a *account, h *hold, at string) error {
	id := contract.HoldRequestedType + ":" + h.id + h.attemptSuffix()
	return e.emit(cloudevent.NewOut(Source, contract.HoldRequestedType, id, a.id, at, contract.HoldRequested{
		HoldID: h.id, Account: a.id, Amount: h.amount.String(),
		ForPeriod: h.forPeriod, BasisPeriod: h.basisPeriod,
	}))
}

// Settle settles month p at instant at: per account in ascending id order, the previous hold's
// release, the bill (lines of p and adjustments of earlier months), and the hold for p+1. Months
// must be settled in order; settling a month already settled emits nothing.
func (e *Engine) Settle(p contract.Period, at time.Time) error {
	if !e.settled.IsZero() && !e.settled.Before(p) {
		return nil
	}
	if !e.settled.IsZero() && e.settled.Next() != p {
		return fmt.Errorf("settle %s: the previous month %s is not settled (last settled %s)", p, p.Prev(), e.settled)
	}
	st := settlement{period: p, periodText: p.String(), nextText: p.Next().String(), at: e.at(at)}
	visit := e.visit(p)
	for len(visit) > 0 {
		chunk := visit
		if e.windows != nil {
			chunk = visit[:min(len(visit), windowChunk)]
		}
		visit = visit[len(chunk):]
		if err := e.settleChunk(chunk, &st); err != nil {
			return err
		}
	}
	clear(e.dirty)
	delete(e.pending, p)
	e.settled = p
	return nil
}

// visit lists, in ascending id order, the accounts settling p can change: those with usage in p,
// with changes to settled months, with a hold to release, or suspended.
func (e *Engine) visit(p contract.Period) []*account {
	in := func(a *account) bool {
		_, u := e.pending[p][a]
		_, d := e.dirty[a]
		_, h := e.holding[a]
		return u || d || h
	}
	n := len(e.pending[p]) + len(e.dirty) + len(e.holding)
	var out []*account
	if n > len(e.order)/4 {
		// Most accounts are active: filter the global order, sorted once and kept sorted.
		if !e.sorted {
			sort.Strings(e.order)
			e.sorted = true
		}
		out = make([]*account, 0, n)
		for _, id := range e.order {
			if a := e.accounts[id]; in(a) {
				out = append(out, a)
			}
		}
		return out
	}
	seen := make(map[*account]struct{}, n)
	for _, set := range []map[*account]struct{}{e.pending[p], e.dirty, e.holding} {
		for a := range set {
			if _, ok := seen[a]; !ok {
				seen[a] = struct{}{}
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, func(x, y *account) int { return strings.Compare(x.id, y.id) })
	return out
}

// settleChunk settles accounts, with the windowed calls their packs need read back first and
// dropped after, so the engine's memory stays bounded by accounts, not calls.
func (e *Engine) settleChunk(accounts []*account, st *settlement) error {
	loaded, err := e.loadWindows(accounts, st.period)
	defer func() {
		for _, s := range loaded {
			for _, m := range s.months {
				m.series, m.sorted = nil, true
			}
		}
	}()
	if err != nil {
		return fmt.Errorf("settle %s: %w", st.period, err)
	}
	for _, a := range accounts {
		if err := e.settleAccount(a, st); err != nil {
			return fmt.Errorf("settle %s account %s: %w", st.period, a.id, err)
		}
	}
	return nil
}

// loadWindows reads back, when the engine keeps totals only, the windowed calls of every service
// with prepaid packs among accounts, for the months through p that settling them derives, and
// returns those services.
func (e *Engine) loadWindows(accounts []*account, p contract.Period) ([]*serviceState, error) {
	if e.windows == nil {
		return nil, nil
	}
	var reqs []WindowRequest
	var services []*serviceState
	for _, a := range accounts {
		for _, s := range a.services {
			if len(s.packs()) == 0 || len(s.months) == 0 || p.Before(s.months[0].period) {
				continue
			}
			reqs = append(reqs, WindowRequest{Account: a.id, Service: s.id, Bounds: e.windowBounds(s, p), End: p.End(e.cfg.Location)})
			services = append(services, s)
		}
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	got, err := e.windows(reqs)
	if err != nil {
		return nil, fmt.Errorf("read back the calls prepaid packs cover: %w", err)
	}
	if len(got) != len(reqs) {
		return nil, fmt.Errorf("read back the calls prepaid packs cover: %d answers to %d requests", len(got), len(reqs))
	}
	for i, s := range services {
		for _, c := range got[i] {
			q := contract.PeriodOf(c.At, e.cfg.Location)
			if p.Before(q) {
				continue
			}
			m := s.month(q)
			if m == nil || c.Calls < 0 {
				return services, fmt.Errorf("%s/%s: %d calls read back for %s, which has no usage here", reqs[i].Account, s.id, c.Calls, q)
			}
			if n := len(m.series); n > 0 && m.series[n-1].at > c.At.UnixNano() {
				m.sorted = false
			}
			m.series = append(m.series, timedCalls{at: c.At.UnixNano(), calls: c.Calls})
		}
		for _, m := range s.months {
			if p.Before(m.period) {
				break
			}
			var sum int64
			for _, tc := range m.series {
				sum += tc.calls
			}
			if sum != m.total {
				return services, fmt.Errorf("%s/%s %s: the calls read back add up to %d, the month's total is %d: the usage read back is not the usage fed", reqs[i].Account, s.id, m.period, sum, m.total)
			}
		}
	}
	return services, nil
}

// windowBounds are a window request's bounds for s through p: where the set of valid packs
// changes, and where each month with usage through p starts and ends.
func (e *Engine) windowBounds(s *serviceState, p contract.Period) []time.Time {
	var months []time.Time
	for _, m := range s.months {
		if p.Before(m.period) {
			break
		}
		months = append(months, m.period.Start(e.cfg.Location), m.period.End(e.cfg.Location))
	}
	return packBounds(s.packs(), months...)
}

// packBounds are the instants, sorted and distinct, where the set of valid packs changes, and
// the extra ones.
func packBounds(packs []*pack, extra ...time.Time) []time.Time {
	out := make([]time.Time, 0, 2*len(packs)+len(extra))
	for _, p := range packs {
		out = append(out, p.validFrom, p.validUntil)
	}
	out = append(out, extra...)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return slices.CompactFunc(out, time.Time.Equal)
}

// settlement is what every account of one settlement shares, formatted once.
type settlement struct {
	period               contract.Period
	periodText, nextText string
	at                   string
}

func (e *Engine) settleAccount(a *account, st *settlement) error {
	p, at := st.period, st.at
	defer e.trackHolding(a)
	_, isDirty := e.dirty[a]
	lines := make([]contract.BillLine, 0, len(a.services))
	var adjustments []contract.Adjustment
	var total, holdBasis cents
	var err error
	for _, s := range a.services {
		sid := s.id
		if isDirty && s.dirty {
			adj, diff, err := e.reprice(sid, s, p)
			if err != nil {
				return err
			}
			adjustments = append(adjustments, adj...)
			if total, err = total.add(diff); err != nil {
				return err
			}
			s.dirty = false
		}
		m := s.month(p)
		if m == nil || m.total == 0 {
			continue
		}
		line, amount, listAmount, err := e.line(sid, s, p)
		if err != nil {
			return err
		}
		lines = append(lines, line)
		if total, err = total.add(amount); err != nil {
			return err
		}
		if holdBasis, err = holdBasis.add(listAmount); err != nil {
			return err
		}
		m.billed = billed{amount: amount, calls: line.Calls}
	}
	slices.SortStableFunc(adjustments, func(x, y contract.Adjustment) int {
		if c := strings.Compare(x.Period, y.Period); c != 0 {
			return c
		}
		return strings.Compare(x.Service, y.Service)
	})

	// 1. release the hold requested at the previous settlement, unless it failed.
	if h := a.requested; h != nil {
		a.requested = nil
		if h.state != holdFailed {
			if err := e.emit(cloudevent.NewOut(Source, contract.HoldReleasedType, contract.HoldReleasedType+":"+h.id, a.id, at,
				contract.HoldReleased{HoldID: h.id, Account: a.id, Amount: h.amount.String()})); err != nil {
				return err
			}
		}
	}
	// 2. the bill.
	if len(lines) > 0 || len(adjustments) > 0 {
		if adjustments == nil {
			adjustments = []contract.Adjustment{}
		}
		bill := contract.Bill{BillID: contract.BillID(a.id, st.periodText), Account: a.id, Period: st.periodText, Currency: e.cfg.Catalogue.Currency,
			Lines: lines, Adjustments: adjustments, Total: total.String()}
		if err := e.emit(cloudevent.NewOut(Source, contract.BillIssuedType, contract.BillIssuedType+":"+bill.BillID, a.id, at, bill)); err != nil {
			return err
		}
	}
	// 3. the hold for the next month, which becomes the account's current hold.
	amount := holdBasis
	if !e.unitRatio {
		if amount, err = centsOf(holdBasis.Decimal().Mul(e.cfg.HoldRatio).Round(2)); err != nil {
			return err
		}
	}
	if amount > 0 {
		h := &hold{id: contract.HoldID(a.id, st.nextText), amount: amount, forPeriod: st.nextText, basisPeriod: st.periodText}
		a.hold, a.requested = h, h
		return e.emitHoldRequested(a, h, at)
	}
	prev := a.hold
	a.hold = nil
	if a.suspended {
		a.suspended = false
		return e.emitStatus(contract.AccountResumedType, a, prev, contract.ReasonNothingToHold, at)
	}
	return nil
}

// line prices (service, p) as billed now; it returns the line, its amount, and its amount at
// list prices (the hold basis).
func (e *Engine) line(sid string, s *serviceState, p contract.Period) (contract.BillLine, cents, cents, error) {
	u := e.derive(s, p)
	start := p.Start(e.cfg.Location)
	list := e.cfg.Catalogue.ListSchedule(sid, start)
	sched := list
	if !list.Free {
		if o := s.overrideFor(start); o != nil {
			sched = Schedule{Tiers: o.Tiers}
		}
	}
	billable := u.total - u.free - u.prepaid
	tierIndex, tier := sched.reach(u.total)
	amount, err := amountCents(billable, tier)
	if err != nil {
		return contract.BillLine{}, 0, 0, err
	}
	listAmount := amount
	if !sched.sameAs(list) {
		_, listTier := list.reach(u.total)
		if listAmount, err = amountCents(billable, listTier); err != nil {
			return contract.BillLine{}, 0, 0, err
		}
	}
	return contract.BillLine{
		Service: sid, Activated: s.activeIn(p, e.cfg.Location),
		Calls: u.total, FreeCalls: u.free, PrepaidCalls: u.prepaid, BillableCalls: billable,
		Tier: tierIndex, UnitPrice: tier.unitText(), Amount: amount.String(),
	}, amount, listAmount, nil
}

// activeIn: a free pack is granted for p to a service activated at any instant before p's end.
func (s *serviceState) activeIn(p contract.Period, loc *time.Location) bool {
	return s.activated && s.activatedAt.Before(p.End(loc))
}

// overrideFor is the contract price for the month starting at start: the override whose
// effective_from is the latest at or before start, the later in the log winning a tie.
func (s *serviceState) overrideFor(start time.Time) *PriceOverride {
	var best *PriceOverride
	overrides := s.overrides()
	for i := range overrides {
		o := &overrides[i]
		if o.EffectiveFrom.After(start) {
			continue
		}
		if best == nil || !o.EffectiveFrom.Before(best.EffectiveFrom) {
			best = o
		}
	}
	return best
}

// reprice re-prices every settled month of (service) before p with everything known now and
// returns an adjustment for each whose amount differs from what was billed for it so far, and
// their sum.
func (e *Engine) reprice(sid string, s *serviceState, p contract.Period) ([]contract.Adjustment, cents, error) {
	var out []contract.Adjustment
	var sum cents
	for _, mu := range s.months {
		m := mu.period
		if !m.Before(p) {
			break
		}
		line, now, _, err := e.line(sid, s, m)
		if err != nil {
			return nil, 0, err
		}
		was := mu.billed
		if now == was.amount {
			continue
		}
		diff := now - was.amount // no overflow: line amounts are never negative
		if sum, err = sum.add(diff); err != nil {
			return nil, 0, err
		}
		out = append(out, contract.Adjustment{Period: m.String(), Service: sid, CallsBefore: was.calls, CallsAfter: line.Calls, Amount: diff.String()})
		mu.billed = billed{amount: now, calls: line.Calls}
	}
	return out, sum, nil
}

// derivation splits a month's calls into free, prepaid and (the rest) billable; packsLeft is
// each pack's calls left after the month (nil without packs).
type derivation struct {
	total, free, prepaid int64
	packsLeft            []int64
}

// derive attributes the calls of month p. The free pack covers the first calls of the month;
// then each call is covered by the valid pack expiring soonest (ties: smaller pack_id), else it
// is postpaid. Packs carry over months, so with packs every earlier month is re-derived in time
// order first.
func (e *Engine) derive(s *serviceState, p contract.Period) derivation {
	freeFor := func(m contract.Period) int64 {
		if s.activeIn(m, e.cfg.Location) {
			return e.cfg.Catalogue.FreeCallsPerMonth
		}
		return 0
	}
	m := s.month(p)
	packs := s.packs()
	if len(packs) == 0 {
		return derivation{total: m.total, free: min(m.total, freeFor(p))}
	}
	left := make([]int64, len(packs))
	for i, pk := range packs {
		left[i] = pk.calls
	}
	d := derivation{packsLeft: left}
	for _, mu := range s.months {
		q := mu.period
		if p.Before(q) {
			break
		}
		mu.sort()
		d = derivation{total: mu.total, packsLeft: left}
		freeLeft := freeFor(q)
		for _, tc := range mu.series {
			n := tc.calls
			f := min(n, freeLeft)
			freeLeft -= f
			d.free += f
			n -= f
			for i, pk := range packs {
				if n == 0 {
					break
				}
				if left[i] == 0 || tc.at < pk.validFrom.UnixNano() || tc.at >= pk.validUntil.UnixNano() {
					continue
				}
				take := min(n, left[i])
				left[i] -= take
				d.prepaid += take
				n -= take
			}
		}
	}
	return d
}

// month is the usage of period p, or nil.
func (s *serviceState) month(p contract.Period) *monthUsage {
	if n := len(s.months); n > 0 && s.months[n-1].period == p { // the common case: the latest month
		return s.months[n-1]
	}
	i, ok := slices.BinarySearchFunc(s.months, p, func(m *monthUsage, p contract.Period) int { return comparePeriods(m.period, p) })
	if !ok {
		return nil
	}
	return s.months[i]
}

func (s *serviceState) addMonth(p contract.Period) *monthUsage {
	m := &monthUsage{period: p, sorted: true}
	i, _ := slices.BinarySearchFunc(s.months, p, func(m *monthUsage, p contract.Period) int { return comparePeriods(m.period, p) })
	s.months = slices.Insert(s.months, i, m)
	return m
}

// add counts calls that occurred at unix nanosecond at.
func (m *monthUsage) add(at, calls int64) {
	if n := len(m.series); n > 0 && m.series[n-1].at > at {
		m.sorted = false
	}
	m.series = append(m.series, timedCalls{at: at, calls: calls})
	m.total += calls
}

func (m *monthUsage) sort() {
	if !m.sorted {
		slices.SortStableFunc(m.series, func(a, b timedCalls) int { return compareInt64(a.at, b.at) })
		m.sorted = true
	}
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func comparePeriods(a, b contract.Period) int {
	if a.Before(b) {
		return -1
	}
	if b.Before(a) {
		return 1
	}
	return 0
}
