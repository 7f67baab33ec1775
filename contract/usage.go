package contract

import (
	"encoding/json"
	"time"

	"github.com/tally-billing/tally/internal/cloudevent"
)

// UsageType is the CloudEvents type of a usage event.
const UsageType = "tally.usage.v1"

// Limits of a usage event.
const (
	MaxCallsPerEvent = 1_000_000
	MaxAccountLen    = 64
	MaxIDLen         = 256 // bytes
	// MaxClockSkew is how far ahead of the receiving clock an event's time may be.
	MaxClockSkew = 5 * time.Minute
)

// Usage is one validated usage event: Calls calls of Service by Account at Time.
type Usage struct {
	ID      string // the gateway's id for the call; retries reuse it
	Account string
	Service string
	Calls   int64
	Time    time.Time
}

// ServiceChecker tells whether calls of a service may be accepted at an instant: the service must
// be in the price catalogue and not retired then. The billing core's catalogue implements it.
type ServiceChecker interface {
	CheckService(service string, at time.Time) error
}

type usageData struct {
	Account *string         `json:"account"`
	Service *string         `json:"service"`
	Calls   json.RawMessage `json:"calls"`
}

// ParseUsage validates a decoded CloudEvent as a usage event received at receivedAt. The error,
// when not nil, is a *cloudevent.Error whose reason can be shown to the sender.
func ParseUsage(ev cloudevent.Event, receivedAt time.Time, services ServiceChecker) (Usage, error) {
	if ev.Type != UsageType {
		return Usage{}, cloudevent.Invalid("type", "type %q is not %q", ev.Type, UsageType)
	}
	var d usageData
	if err := cloudevent.DecodeData(ev.Data, &d); err != nil {
		return Usage{}, err
	}
	u := Usage{ID: ev.ID, Time: ev.Time, Calls: 1}
	if ev.Time.IsZero() {
		return Usage{}, invalid("time", "time is missing: it must say when the call happened")
	}
	if ev.Time.After(receivedAt.Add(MaxClockSkew)) {
		return Usage{}, invalid("time", "time %s is more than %s ahead of the receiving clock (%s)",
			ev.Time.Format(time.RFC3339), MaxClockSkew, receivedAt.Format(time.RFC3339))
	}
	if d.Account == nil {
		return Usage{}, invalid("account", "data.account is missing")
	}
	if err := ValidateAccount(*d.Account); err != nil {
		return Usage{}, err
	}
	u.Account = *d.Account
	if d.Service == nil || *d.Service == "" {
		return Usage{}, invalid("service", "data.service is missing")
	}
	if err := services.CheckService(*d.Service, ev.Time); err != nil {
		return Usage{}, invalid("service", "data.service: %v", err)
	}
	u.Service = *d.Service
	if d.Calls != nil {
		n, ok := cloudevent.Int64(d.Calls)
		if !ok {
			return Usage{}, invalid("calls", "data.calls %s is not an integer", d.Calls)
		}
		if n < 1 || n > MaxCallsPerEvent {
			return Usage{}, invalid("calls", "data.calls %d is outside 1..%d", n, MaxCallsPerEvent)
		}
		u.Calls = n
	}
	return u, nil
}

// ValidateAccount checks an account id: 1–64 characters of [A-Za-z0-9._-].
func ValidateAccount(a string) error {
	if a == "" {
		return invalid("account", "data.account is empty")
	}
	if len(a) > MaxAccountLen {
		return invalid("account", "data.account is longer than %d characters", MaxAccountLen)
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return invalid("account", "data.account %q has a character outside [A-Za-z0-9._-]", a)
		}
	}
	return nil
}

func invalid(code, format string, args ...any) error {
	return cloudevent.Invalid(code, format, args...)
}
