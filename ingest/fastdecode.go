package ingest

import (
	"bytes"
	"time"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/cloudevent"
)

// DecodeUsage is cloudevent.Decode followed by ParseUsage, with a fast path for the common shape
// of a usage event: a flat object of known lowercase keys, ASCII strings without escapes, calls
// a plain integer. Anything else (extensions, escapes, odd spellings, errors) goes the reflective
// way, so the answer, accepted or rejected with its reason, is always exactly ParseUsage's;
// FuzzDecodeUsageMatchesParseUsage holds it to that.
func DecodeUsage(raw []byte, receivedAt time.Time, services ServiceChecker) (Usage, error) {
	if u, ok := fastUsage(raw, receivedAt, services); ok {
		return u, nil
	}
	ev, err := cloudevent.Decode(raw)
	if err != nil {
		return Usage{}, err
	}
	return ParseUsage(ev, receivedAt, services)
}

// fastUsage returns ok only for a valid event in the common shape.
func fastUsage(raw []byte, receivedAt time.Time, services ServiceChecker) (Usage, bool) {
	s := scanner{b: raw}
	var id, typ, tm, account, service []byte
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
		return Usage{}, false
	}
	for first := true; ; first = false {
		if s.byte('}') {
			break
		}
		if !first && !s.byte(',') {
			return Usage{}, false
		}
		key, ok := s.str()
		if !ok || !s.byte(':') {
			return Usage{}, false
		}
		switch string(key) {
		case "specversion":
			v, ok := s.str()
			if !ok || !once(fSpec) || string(v) != cloudevent.SpecVersion {
				return Usage{}, false
			}
		case "id":
			if id, ok = s.str(); !ok || !once(fID) {
				return Usage{}, false
			}
		case "source":
			if _, ok = s.str(); !ok || !once(fSource) {
				return Usage{}, false
			}
		case "type":
			if typ, ok = s.str(); !ok || !once(fType) {
				return Usage{}, false
			}
		case "time":
			if tm, ok = s.str(); !ok || !once(fTime) {
				return Usage{}, false
			}
		case "datacontenttype":
			v, ok := s.str()
			if !ok || !once(fCT) || string(v) != "application/json" {
				return Usage{}, false
			}
		case "recordedat":
			v, ok := s.str()
			if !ok || !once(fRecorded) {
				return Usage{}, false
			}
			if _, err := cloudevent.ParseTime(string(v)); err != nil {
				return Usage{}, false
			}
		case "data":
			if !once(fData) || !s.byte('{') {
				return Usage{}, false
			}
			for dfirst := true; ; dfirst = false {
				if s.byte('}') {
					break
				}
				if !dfirst && !s.byte(',') {
					return Usage{}, false
				}
				dkey, ok := s.str()
				if !ok || !s.byte(':') {
					return Usage{}, false
				}
				switch string(dkey) {
				case "account":
					if account, ok = s.str(); !ok || !once(fAccount) {
						return Usage{}, false
					}
				case "service":
					if service, ok = s.str(); !ok || !once(fService) {
						return Usage{}, false
					}
				case "calls":
					if calls, ok = s.smallInt(); !ok || !once(fCalls) {
						return Usage{}, false
					}
				default:
					return Usage{}, false
				}
			}
		default:
			return Usage{}, false
		}
	}
	s.space()
	if s.i != len(s.b) || seen&(fID|fType|fTime|fData|fAccount|fService) != fID|fType|fTime|fData|fAccount|fService {
		return Usage{}, false
	}
	if len(id) == 0 || len(id) > 256 || string(typ) != UsageType || len(account) == 0 || len(service) == 0 || calls < 1 || calls > MaxCallsPerEvent {
		return Usage{}, false
	}
	t, err := cloudevent.ParseTime(string(tm))
	if err != nil || t.After(receivedAt.Add(MaxClockSkew)) {
		return Usage{}, false
	}
	a := string(account)
	if ValidateAccount(a) != nil {
		return Usage{}, false
	}
	svc := string(service)
	if services.CheckService(svc, t) != nil {
		return Usage{}, false
	}
	return Usage{ID: string(id), Account: a, Service: svc, Calls: calls, Time: t}, true
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
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
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
