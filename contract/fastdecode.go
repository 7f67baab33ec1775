package contract

import (
	"bytes"
	"time"

	"github.com/tally-billing/tally/internal/cloudevent"
)

// DecodeUsage is cloudevent.Decode followed by ParseUsage, with a fast path for the common shape
// of a usage event: a flat object of known lowercase keys, ASCII strings without escapes, calls
// a plain integer. Anything else (extensions, escapes, odd spellings, errors) goes the reflective
// way, so the answer, accepted or rejected with its reason, is always exactly ParseUsage's;
// FuzzDecodeUsageMatchesParseUsage holds it to that.
func DecodeUsage(raw []byte, receivedAt time.Time, services ServiceChecker) (Usage, error) {
	if u, _, ok := fastUsage(raw, receivedAt, services); ok {
		return u, nil
	}
	ev, err := cloudevent.Decode(raw)
	if err != nil {
		return Usage{}, err
	}
	return ParseUsage(ev, receivedAt, services)
}

// DecodeLoggedUsage is the fast path for a usage line of a log being replayed: received at its
// recordedat (else at its time). ok is false for anything but a valid usage event of the common
// shape; decode those the general way (cloudevent.Decode, ParseUsage), which gives the reason.
func DecodeLoggedUsage(raw []byte, services ServiceChecker) (u Usage, recordedAt time.Time, ok bool) {
	return fastUsage(raw, time.Time{}, services)
}

// fastUsage returns ok only for a valid event in the common shape, received at receivedAt (zero:
// at the event's recordedat, else its time, which it returns).
func fastUsage(raw []byte, receivedAt time.Time, services ServiceChecker) (Usage, time.Time, bool) {
	s := scanner{b: raw}
	var id, typ, tm, account, service []byte
	var recorded time.Time
	var calls int64 = 1
	seen := 0
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
	once := func(f int) bool {
		if seen&f != 0 {
			return false
		}
		seen |= f
		return true
	}
	if !s.byte('{') {
		return Usage{}, time.Time{}, false
	}
	for first := true; ; first = false {
		if s.byte('}') {
			break
		}
		if !first && !s.byte(',') {
			return Usage{}, time.Time{}, false
		}
		key, ok := s.str()
		if !ok || !s.byte(':') {
			return Usage{}, time.Time{}, false
		}
		switch string(key) {
		case "specversion":
			v, ok := s.str()
			if !ok || !once(fSpec) || string(v) != cloudevent.SpecVersion {
				return Usage{}, time.Time{}, false
			}
		case "id":
			if id, ok = s.str(); !ok || !once(fID) {
				return Usage{}, time.Time{}, false
			}
		case "source":
			if _, ok = s.str(); !ok || !once(fSource) {
				return Usage{}, time.Time{}, false
			}
		case "type":
			if typ, ok = s.str(); !ok || !once(fType) {
				return Usage{}, time.Time{}, false
			}
		case "time":
			if tm, ok = s.str(); !ok || !once(fTime) {
				return Usage{}, time.Time{}, false
			}
		case "datacontenttype":
			v, ok := s.str()
			if !ok || !once(fCT) || string(v) != "application/json" {
				return Usage{}, time.Time{}, false
			}
		case "recordedat":
			v, ok := s.str()
			if !ok || !once(fRecorded) {
				return Usage{}, time.Time{}, false
			}
			var err error
			if recorded, err = cloudevent.ParseTime(string(v)); err != nil {
				return Usage{}, time.Time{}, false
			}
		case "data":
			if !once(fData) || !s.byte('{') {
				return Usage{}, time.Time{}, false
			}
			for dfirst := true; ; dfirst = false {
				if s.byte('}') {
					break
				}
				if !dfirst && !s.byte(',') {
					return Usage{}, time.Time{}, false
				}
				dkey, ok := s.str()
				if !ok || !s.byte(':') {
					return Usage{}, time.Time{}, false
				}
				switch string(dkey) {
				case "account":
					if account, ok = s.str(); !ok || !once(fAccount) {
						return Usage{}, time.Time{}, false
					}
				case "service":
					if service, ok = s.str(); !ok || !once(fService) {
						return Usage{}, time.Time{}, false
					}
				case "calls":
					if calls, ok = s.smallInt(); !ok || !once(fCalls) {
						return Usage{}, time.Time{}, false
					}
				default:
					return Usage{}, time.Time{}, false
				}
			}
		default:
			return Usage{}, time.Time{}, false
		}
	}
	s.space()
	if s.i != len(s.b) || seen&(fID|fType|fTime|fData|fAccount|fService) != fID|fType|fTime|fData|fAccount|fService {
		return Usage{}, time.Time{}, false
	}
	if string(typ) != UsageType {
		return Usage{}, time.Time{}, false
	}
	t, err := cloudevent.ParseTime(string(tm))
	if err != nil {
		return Usage{}, time.Time{}, false
	}
	if receivedAt.IsZero() {
		receivedAt = recorded
		if receivedAt.IsZero() {
			receivedAt = t
		}
	}
	u := Usage{ID: string(id), Account: string(account), Service: string(service), Calls: calls, Time: t}
	if !validUsage(u, receivedAt, services) {
		return Usage{}, time.Time{}, false
	}
	return u, receivedAt, true
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

type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c (after whitespace) if it is next.
func (s *scanner) byte(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string of printable ASCII without escapes; anything else is left to the slow path.
func (s *scanner) str() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, true
		case c == '\\' || c < 0x20 || c >= 0x7f: // DEL and beyond: the slow path judges them
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// smallInt reads a positive integer of at most 7 digits, without sign, fraction or exponent.
func (s *scanner) smallInt() (int64, bool) {
	s.space()
	start := s.i
	var n int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' && s.i-start < 8 {
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.b[start:s.i]
	if len(digits) == 0 || len(digits) > 7 || digits[0] == '0' {
		return 0, false
	}
	if s.i < len(s.b) && bytes.IndexByte([]byte(".eE+-"), s.b[s.i]) >= 0 {
		return 0, false
	}
	return n, true
}
