package settle

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"time"

	"github.com/shopspring/decimal"
)

// Catalogue is the versioned price list: which services exist when, and what their calls cost.
// It is data (see DefaultCatalogue and LoadCatalogue), never code.
type Catalogue struct {
	Currency string
	// ChargingStarts: months whose first instant is before it were a free public beta (tier 0).
	ChargingStarts time.Time
	// FreeCallsPerMonth is the free resource pack of every activated service.
	FreeCallsPerMonth int64
	services          map[string]*Service
	ids               []string // sorted
}

// Service is one API of the catalogue.
type Service struct {
	ID   string
	Name string
	// AvailableFrom and RetiredAt bound when calls are accepted; zero means unbounded.
	AvailableFrom time.Time
	RetiredAt     time.Time
	// Prices in ascending EffectiveFrom order; a month uses the last one effective at its first
	// instant (or the first one, for the month a service appears in).
	Prices []PriceVersion
}

// PriceVersion is a service's pricing from EffectiveFrom on.
type PriceVersion struct {
	EffectiveFrom time.Time // zero: since always
	Beta          bool      // free public beta: metered, never charged, no packs
	Tiers         []Tier
}

// Tier is a reach tier: when the month's total calls reach FromCalls, UnitPrice (per 1,000 calls)
// applies to every billable call of the month.
type Tier struct {
	FromCalls int64
	UnitPrice decimal.Decimal
	// micros is UnitPrice in millionths for the integer fast path (-1: not exact at that
	// scale); text is UnitPrice as the wire shows it. Both are set by NewTier.
	micros int64
	text   string
}

// NewTier builds a tier (use it rather than a literal: it prepares the tier for pricing).
func NewTier(from int64, price decimal.Decimal) Tier {
	t := Tier{FromCalls: from, UnitPrice: price, micros: -1, text: price.String()}
	if m, ok := priceMicros(price); ok {
		t.micros = m
	}
	return t
}

// unitText is the unit price as emitted.
func (t *Tier) unitText() string {
	if t.text == "" {
		return t.UnitPrice.String()
	}
	return t.text
}

// Schedule is what prices one (service, month): free, or reach tiers.
type Schedule struct {
	Free  bool
	Tiers []Tier
}

// Price selects the tier reached by total calls: its 1-based index and unit price. A free
// schedule answers tier 0 and price 0.
func (s Schedule) Price(total int64) (tier int, unitPrice decimal.Decimal) {
	i, t := s.reach(total)
	return i, t.UnitPrice
}

var freeTier = NewTier(0, decimal.Zero)

// reach is Price returning the tier itself (the free tier for a free schedule).
func (s Schedule) reach(total int64) (int, *Tier) {
	if s.Free || len(s.Tiers) == 0 {
		return 0, &freeTier
	}
	i := sort.Search(len(s.Tiers), func(i int) bool { return s.Tiers[i].FromCalls > total }) - 1
	if i < 0 {
		i = 0
	}
	return i + 1, &s.Tiers[i]
}

// sameAs reports whether s and o are the very same schedule (same tiers slice), which lets the
// common case of list prices skip pricing twice.
func (s Schedule) sameAs(o Schedule) bool {
	if s.Free || o.Free {
		return s.Free == o.Free
	}
	return len(s.Tiers) > 0 && len(s.Tiers) == len(o.Tiers) && &s.Tiers[0] == &o.Tiers[0]
}

//go:embed default_catalogue.json
var defaultCatalogueJSON []byte

// DefaultCatalogue is the catalogue of SPEC §1 (the seed's Image Analysis price guide).
func DefaultCatalogue() *Catalogue {
	c, err := LoadCatalogue(bytes.NewReader(defaultCatalogueJSON))
	if err != nil {
		// The embedded file is checked by TestDefaultCatalogueMatchesSpec; this cannot happen in a
		// built binary whose tests passed.
		panic(fmt.Sprintf("embedded default catalogue is invalid: %v", err))
	}
	return c
}

// Service returns the service with the id, or nil.
func (c *Catalogue) Service(id string) *Service { return c.services[id] }

// ServiceIDs lists the services in id order.
func (c *Catalogue) ServiceIDs() []string { return append([]string(nil), c.ids...) }

// CheckService implements contract.ServiceChecker: calls are accepted for a known service between
// its availability and its retirement.
func (c *Catalogue) CheckService(id string, at time.Time) error {
	s := c.services[id]
	if s == nil {
		return fmt.Errorf("unknown service %q", id)
	}
	if !s.AvailableFrom.IsZero() && at.Before(s.AvailableFrom) {
		return fmt.Errorf("service %q is not available before %s", id, s.AvailableFrom.Format(time.RFC3339))
	}
	if !s.RetiredAt.IsZero() && !at.Before(s.RetiredAt) {
		return fmt.Errorf("service %q was retired at %s", id, s.RetiredAt.Format(time.RFC3339))
	}
	return nil
}

// versionAt is the price version in effect at instant t.
func (s *Service) versionAt(t time.Time) PriceVersion {
	i := sort.Search(len(s.Prices), func(i int) bool { return s.Prices[i].EffectiveFrom.After(t) }) - 1
	if i < 0 {
		i = 0
	}
	return s.Prices[i]
}

// IsBeta reports whether the service is in free beta at t.
func (c *Catalogue) IsBeta(id string, t time.Time) bool {
	s := c.services[id]
	return s != nil && s.versionAt(t).Beta
}

// ListSchedule is the list-price schedule of a service for the month starting at monthStart.
func (c *Catalogue) ListSchedule(id string, monthStart time.Time) Schedule {
	s := c.services[id]
	if s == nil || monthStart.Before(c.ChargingStarts) {
		return Schedule{Free: true}
	}
	v := s.versionAt(monthStart)
	if v.Beta {
		return Schedule{Free: true}
	}
	return Schedule{Tiers: v.Tiers}
}

// --- the file format ---

type catalogueFile struct {
	Currency          string        `json:"currency"`
	ChargingStarts    string        `json:"charging_starts"`
	FreeCallsPerMonth *int64        `json:"free_calls_per_month"`
	Services          []serviceFile `json:"services"`
}

type serviceFile struct {
	ID            string             `json:"id"`
	Name          string             `json:"name"`
	AvailableFrom string             `json:"available_from,omitempty"`
	RetiredAt     string             `json:"retired_at,omitempty"`
	Prices        []priceVersionFile `json:"prices"`
}

type priceVersionFile struct {
	EffectiveFrom string     `json:"effective_from,omitempty"`
	Beta          bool       `json:"beta,omitempty"`
	Tiers         []tierFile `json:"tiers,omitempty"`
}

// tierFile is a tier on the wire: in catalogue files and in price override events.
type tierFile struct {
	FromCalls *int64 `json:"from_calls"`
	UnitPrice string `json:"unit_price"`
}

var serviceIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// LoadCatalogue reads and validates a catalogue in JSON. Every problem is reported, each naming
// its field (for example services[2].prices[0].tiers[1].unit_price) and what is wrong.
func LoadCatalogue(r io.Reader) (*Catalogue, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var f catalogueFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("catalogue: %w", err)
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("catalogue %s: %s", field, fmt.Sprintf(format, args...)))
	}
	c := &Catalogue{Currency: f.Currency, services: map[string]*Service{}}
	if f.Currency == "" {
		bad("currency", "is missing")
	}
	if f.ChargingStarts == "" {
		bad("charging_starts", "is missing (RFC 3339; months before it are free)")
	} else if t, err := time.Parse(time.RFC3339, f.ChargingStarts); err != nil {
		bad("charging_starts", "%q is not RFC 3339", f.ChargingStarts)
	} else {
		c.ChargingStarts = t
	}
	if f.FreeCallsPerMonth == nil {
		bad("free_calls_per_month", "is missing")
	} else if *f.FreeCallsPerMonth < 0 {
		bad("free_calls_per_month", "must not be negative")
	} else {
		c.FreeCallsPerMonth = *f.FreeCallsPerMonth
	}
	if len(f.Services) == 0 {
		bad("services", "is empty")
	}
	optTime := func(field, s string) time.Time {
		if s == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			bad(field, "%q is not RFC 3339", s)
		}
		return t
	}
	for i, sf := range f.Services {
		at := fmt.Sprintf("services[%d]", i)
		if !serviceIDPattern.MatchString(sf.ID) {
			bad(at+".id", "%q must be 1-64 characters of [a-z0-9-]", sf.ID)
		} else if c.services[sf.ID] != nil {
			bad(at+".id", "%q appears twice", sf.ID)
		}
		s := &Service{ID: sf.ID, Name: sf.Name,
			AvailableFrom: optTime(at+".available_from", sf.AvailableFrom),
			RetiredAt:     optTime(at+".retired_at", sf.RetiredAt)}
		if !s.AvailableFrom.IsZero() && !s.RetiredAt.IsZero() && !s.RetiredAt.After(s.AvailableFrom) {
			bad(at+".retired_at", "must be after available_from")
		}
		if len(sf.Prices) == 0 {
			bad(at+".prices", "is empty: give at least one price version (or one with \"beta\": true)")
		}
		for j, pf := range sf.Prices {
			pat := fmt.Sprintf("%s.prices[%d]", at, j)
			v := PriceVersion{EffectiveFrom: optTime(pat+".effective_from", pf.EffectiveFrom), Beta: pf.Beta}
			if j > 0 && !v.EffectiveFrom.After(s.Prices[j-1].EffectiveFrom) {
				bad(pat+".effective_from", "must be after the previous version's")
			}
			if pf.Beta && len(pf.Tiers) > 0 {
				bad(pat+".tiers", "a beta version is free and must have no tiers")
			}
			if !pf.Beta {
				tiers, tierErrs := parseTiers(pat+".tiers", pf.Tiers)
				for _, err := range tierErrs {
					errs = append(errs, fmt.Errorf("catalogue %w", err))
				}
				v.Tiers = tiers
			}
			s.Prices = append(s.Prices, v)
		}
		if serviceIDPattern.MatchString(sf.ID) && c.services[sf.ID] == nil {
			c.services[sf.ID] = s
			c.ids = append(c.ids, sf.ID)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Strings(c.ids)
	return c, nil
}

// parseTiers validates tiers from the wire: the first starts at 0 calls, from_calls strictly
// ascending, unit prices non-negative decimal strings. Errors name field (e.g. "tiers[1].unit_price").
func parseTiers(field string, in []tierFile) ([]Tier, []error) {
	if len(in) == 0 {
		return nil, []error{fmt.Errorf("%s: is empty", field)}
	}
	var errs []error
	out := make([]Tier, 0, len(in))
	for k, tf := range in {
		at := fmt.Sprintf("%s[%d]", field, k)
		var t Tier
		switch {
		case tf.FromCalls == nil:
			errs = append(errs, fmt.Errorf("%s.from_calls: is missing", at))
		case k == 0 && *tf.FromCalls != 0:
			errs = append(errs, fmt.Errorf("%s.from_calls: the first tier must start at 0", at))
		case k > 0 && *tf.FromCalls <= out[k-1].FromCalls:
			errs = append(errs, fmt.Errorf("%s.from_calls: %d must be greater than the previous tier's %d", at, *tf.FromCalls, out[k-1].FromCalls))
		default:
			t.FromCalls = *tf.FromCalls
		}
		p, err := decimal.NewFromString(tf.UnitPrice)
		switch {
		case tf.UnitPrice == "":
			errs = append(errs, fmt.Errorf("%s.unit_price: is missing (a decimal string, e.g. \"2.5\")", at))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.unit_price: %q is not a decimal", at, tf.UnitPrice))
		case p.IsNegative():
			errs = append(errs, fmt.Errorf("%s.unit_price: %s is negative", at, tf.UnitPrice))
		default:
			t = NewTier(t.FromCalls, p)
		}
		out = append(out, t)
	}
	return out, errs
}
