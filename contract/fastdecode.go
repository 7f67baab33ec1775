package contract

import (
	"time"

	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/jsonscan"
)

// DecodeUsage is cloudevent.Decode followed by ParseUsage, with a fast path for every usage
// event a CloudEvents producer sends in structured mode: attributes in any order, escapes,
// subject, dataschema, extensions and any JSON datacontenttype. What the fast path cannot take
// for certain (a name in capitals, a duplicate, data_base64, an error) goes the reflective way,
// so the answer, accepted or rejected with its reason, is always exactly ParseUsage's;
// FuzzDecodeUsageMatchesParseUsage holds it to that. With a rejection, the Usage holds the
// event's id when its envelope gave one (for the sender to match the reason to its event).
func DecodeUsage(raw []byte, receivedAt time.Time, services ServiceChecker) (Usage, error) {
	if u, _, ok := fastUsage(raw, receivedAt, services); ok {
		return u, nil
	}
	ev, err := cloudevent.Decode(raw)
	if err != nil {
		return Usage{}, err
	}
	u, err := ParseUsage(ev, receivedAt, services)
	if err != nil {
		return Usage{ID: ev.ID}, err
	}
	return u, nil
}

// DecodeLoggedUsage is the fast path for a usage line of a log being replayed: received at its
// recordedat (else at its time). ok is false for anything but a valid usage event the fast path
// takes; decode those the general way (cloudevent.Decode, ParseUsage), which gives the reason.
func DecodeLoggedUsage(raw []byte, services ServiceChecker) (u Usage, recordedAt time.Time, ok bool) {
	return fastUsage(raw, time.Time{}, services)
}

// Attributes the reflective decoder reads (cloudevent.wire) and usage data fields, as bits.
const (
	fSpec = 1 << iota
	fID
	fSource
	fType
	fTime
	fCT
	fRecorded
	fData
	fAccount
	fService
	fCalls
)

// usageScan holds what fastUsage has read so far.
type usageScan struct {
	jsonscan.Scanner
	seen                      int
	id, typ, tm, account, svc []byte
	recorded                  time.Time
	calls                     int64
}

// once marks field f read; false if it was already (encoding/json would keep the last copy).
func (s *usageScan) once(f int) bool {
	if s.seen&f != 0 {
		return false
	}
	s.seen |= f
	return true
}

// fastUsage returns ok only for a valid event it reads for certain, received at receivedAt
// (zero: at the event's recordedat, else its time, which it returns).
func fastUsage(raw []byte, receivedAt time.Time, services ServiceChecker) (Usage, time.Time, bool) {
	s := usageScan{Scanner: jsonscan.Scanner{B: raw}, calls: 1}
	if !s.Byte('{') {
		return Usage{}, time.Time{}, false
	}
	for first := true; !s.Byte('}'); first = false {
		if !first && !s.Byte(',') {
			return Usage{}, time.Time{}, false
		}
		key, ok := s.Key()
		if !ok || !s.attribute(key) {
			return Usage{}, time.Time{}, false
		}
	}
	const required = fID | fType | fTime | fData | fAccount | fService
	if !s.Done() || s.seen&required != required || string(s.typ) != UsageType {
		return Usage{}, time.Time{}, false
	}
	t, err := cloudevent.ParseTime(string(s.tm))
	if err != nil {
		return Usage{}, time.Time{}, false
	}
	if receivedAt.IsZero() {
		receivedAt = s.recorded
		if receivedAt.IsZero() {
			receivedAt = t
		}
	}
	u := Usage{ID: string(s.id), Account: string(s.account), Service: string(s.svc), Calls: s.calls, Time: t}
	if !validUsage(u, receivedAt, services) {
		return Usage{}, time.Time{}, false
	}
	return u, receivedAt, true
}

// attribute reads the value of one top-level key; false when the fast path must give up.
func (s *usageScan) attribute(key []byte) bool {
	var v []byte
	ok := true
	switch string(key) {
	case "specversion":
		v, ok = s.String()
		return ok && s.once(fSpec) && string(v) == cloudevent.SpecVersion
	case "id":
		if s.id, ok = s.String(); !ok || !s.once(fID) {
			return false
		}
		_, ok = cloudevent.Printable(s.id)
		return ok
	case "source":
		if v, ok = s.String(); !ok || !s.once(fSource) {
			return false
		}
		_, ok = cloudevent.Printable(v)
		return ok
	case "type":
		s.typ, ok = s.String()
		return ok && s.once(fType)
	case "time":
		s.tm, ok = s.String()
		return ok && s.once(fTime)
	case "datacontenttype":
		v, ok = s.String()
		return ok && s.once(fCT) && cloudevent.IsJSONMediaType(string(v))
	case "recordedat":
		if v, ok = s.String(); !ok || !s.once(fRecorded) {
			return false
		}
		var err error
		s.recorded, err = cloudevent.ParseTime(string(v))
		return err == nil
	case "data":
		return s.once(fData) && s.data()
	case "data_base64":
		return false // refused, with its reason, by the reflective decoder
	case "subject", "dataschema": // ignored, as by the reflective decoder
		_, ok = s.String()
		return ok
	}
	// An extension, ignored too. Names in capitals or with other characters, and values that
	// are objects or arrays, are the reflective decoder's to judge.
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return len(key) > 0 && s.SkipScalar()
}

// data reads the usage data object: account, service and calls, nothing else (DecodeData
// refuses unknown fields).
func (s *usageScan) data() bool {
	if !s.Byte('{') {
		return false
	}
	for first := true; !s.Byte('}'); first = false {
		if !first && !s.Byte(',') {
			return false
		}
		key, ok := s.Key()
		if !ok {
			return false
		}
		switch string(key) {
		case "account":
			s.account, ok = s.String()
			ok = ok && s.once(fAccount)
		case "service":
			s.svc, ok = s.String()
			ok = ok && s.once(fService)
		case "calls":
			s.calls, ok = s.SmallInt(7)
			ok = ok && s.once(fCalls)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
	return true
}

// validUsage is the fast path's check of a usage event's fields, received at receivedAt.
func validUsage(u Usage, receivedAt time.Time, services ServiceChecker) bool {
	return len(u.ID) > 0 && len(u.ID) <= MaxIDLen && u.Calls >= 1 && u.Calls <= MaxCallsPerEvent &&
		!u.Time.After(receivedAt.Add(MaxClockSkew)) && ValidateAccount(u.Account) == nil && services.CheckService(u.Service, u.Time) == nil
}

// PlainUsage reports whether a stored usage event, received at receivedAt, is valid and of the
// plain shape the fast decoder takes: its log line decodes back to exactly u, accepted. A caller
// holding u can then apply it without the line's encode and decode; anything else (an id
// needing escapes, a time out of range) goes the line's way, which gives the same answer slowly.
func PlainUsage(u Usage, receivedAt time.Time, services ServiceChecker) bool {
	if u.Time.IsZero() || receivedAt.IsZero() {
		return false
	}
	return plainID(u.ID) && validUsage(u, receivedAt, services)
}
