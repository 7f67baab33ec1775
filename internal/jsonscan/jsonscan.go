// Package jsonscan reads JSON without reflection or allocation for the hot paths that decode
// outside input (usage events, batches of them). It is strict and modest: whatever it cannot
// take for certain (a syntax error, deep nesting, a lone surrogate) it refuses, and its callers
// then ask encoding/json, whose answer and reason stay the contract. So it may be slower than
// needed on odd input, never different.
package jsonscan

import (
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is how deeply nested a skipped value may be; deeper ones are refused (encoding/json
// takes up to 10,000 levels, and judges them).
const MaxDepth = 64

// Scanner reads B from I.
type Scanner struct {
	B []byte
	I int
}

// Space skips JSON whitespace.
func (s *Scanner) Space() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Byte consumes c, after whitespace, if it comes next.
func (s *Scanner) Byte(c byte) bool {
	s.Space()
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// Done reports whether only whitespace is left.
func (s *Scanner) Done() bool {
	s.Space()
	return s.I == len(s.B)
}

// plain marks the bytes a string may hold as they are: not a quote, a backslash, a control
// character or the start of a multi-byte character. Skipping runs of them is the hot loop.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainRun is how many bytes at the start of b are plain.
func plainRun(b []byte) int {
	i := 0
	for i < len(b) && plain[b[i]] {
		i++
	}
	return i
}

// Key reads an object key of ASCII without escapes and the colon after it. Keys that
// need more are refused: encoding/json matches keys case-insensitively, with Unicode folding,
// and only a plain key can be compared with the names a caller knows.
func (s *Scanner) Key() ([]byte, bool) {
	if !s.Byte('"') {
		return nil, false
	}
	start := s.I
	s.I += plainRun(s.B[s.I:])
	if s.I == len(s.B) || s.B[s.I] != '"' { // an escape, a control character or beyond ASCII
		return nil, false
	}
	s.I++
	return s.B[start : s.I-1], s.Byte(':')
}

// String reads a string value and returns it unescaped: a slice of B when it holds no escapes,
// else a new slice. Invalid UTF-8, control characters and lone surrogates are refused (the
// reflective decoder rejects the first two and turns the last into U+FFFD).
func (s *Scanner) String() ([]byte, bool) {
	if !s.Byte('"') {
		return nil, false
	}
	start := s.I
	escaped, ok := s.stringBody(true)
	if !ok {
		return nil, false
	}
	body := s.B[start : s.I-1]
	if !escaped {
		return body, true
	}
	return unescape(body), true
}

// stringBody consumes a string from after its opening quote to after its closing one, checking
// it: UTF-8, no control characters, valid escapes, and with pairedSurrogates every \u
// surrogate paired. escaped reports whether it holds any escape.
func (s *Scanner) stringBody(pairedSurrogates bool) (escaped, ok bool) {
	for s.I < len(s.B) {
		s.I += plainRun(s.B[s.I:])
		if s.I == len(s.B) {
			break
		}
		switch c := s.B[s.I]; {
		case c == '"':
			s.I++
			return escaped, true
		case c < 0x20:
			return false, false
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(s.B[s.I:])
			if r == utf8.RuneError && n == 1 {
				return false, false
			}
			s.I += n
		default: // a backslash
			escaped = true
			if s.I+1 >= len(s.B) {
				return false, false
			}
			e := s.B[s.I+1]
			s.I += 2
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				r, ok := s.hex4()
				if !ok {
					return false, false
				}
				if pairedSurrogates && utf16.IsSurrogate(r) {
					if !(s.I+1 < len(s.B) && s.B[s.I] == '\\' && s.B[s.I+1] == 'u') {
						return false, false
					}
					s.I += 2
					r2, ok := s.hex4()
					if !ok || utf16.DecodeRune(r, r2) == utf8.RuneError {
						return false, false
					}
				}
			default:
				return false, false
			}
		}
	}
	return false, false
}

// unescape decodes the body of a string stringBody(true) checked.
func unescape(body []byte) []byte {
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); {
		if body[i] != '\\' {
			out = append(out, body[i])
			i++
			continue
		}
		e := body[i+1]
		i += 2
		switch e {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hexRune(body[i : i+4])
			i += 4
			if utf16.IsSurrogate(r) { // paired: stringBody made sure
				r = utf16.DecodeRune(r, hexRune(body[i+2:i+6]))
				i += 6
			}
			out = utf8.AppendRune(out, r)
		default: // " \ /
			out = append(out, e)
		}
	}
	return out
}

// hexRune reads four hex digits stringBody checked.
func hexRune(h []byte) rune {
	s := Scanner{B: h}
	r, _ := s.hex4()
	return r
}

func (s *Scanner) hex4() (rune, bool) {
	if s.I+4 > len(s.B) {
		return 0, false
	}
	var r rune
	for _, c := range s.B[s.I : s.I+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	s.I += 4
	return r, true
}

// SmallInt reads a positive integer literal of at most maxDigits (≤ 18) digits: no sign,
// fraction, exponent or leading zero.
func (s *Scanner) SmallInt(maxDigits int) (int64, bool) {
	s.Space()
	start := s.I
	var n int64
	for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' && s.I-start <= maxDigits {
		n = n*10 + int64(s.B[s.I]-'0')
		s.I++
	}
	digits := s.I - start
	if digits == 0 || digits > maxDigits || s.B[start] == '0' {
		return 0, false
	}
	if s.I < len(s.B) {
		switch s.B[s.I] {
		case '.', 'e', 'E', '+', '-':
			return 0, false
		}
	}
	return n, true
}

// SkipScalar consumes a string, number, boolean or null; it refuses objects and arrays.
func (s *Scanner) SkipScalar() bool {
	s.Space()
	if s.I < len(s.B) && (s.B[s.I] == '{' || s.B[s.I] == '[') {
		return false
	}
	return s.skip(0)
}

// Skip consumes one JSON value of any kind, checking its syntax (strings need valid UTF-8).
func (s *Scanner) Skip() bool { return s.skip(0) }

func (s *Scanner) skip(depth int) bool {
	s.Space()
	if s.I >= len(s.B) {
		return false
	}
	switch c := s.B[s.I]; {
	case c == '"':
		return s.skipString()
	case c == '{' || c == '[':
		if depth >= MaxDepth {
			return false
		}
		s.I++
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		if s.Byte(end) {
			return true
		}
		for {
			if c == '{' && !s.skipKey() {
				return false
			}
			if !s.skip(depth + 1) {
				return false
			}
			if s.Byte(end) {
				return true
			}
			if !s.Byte(',') {
				return false
			}
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.skipNumber()
	}
}

// skipKey consumes an object key of any spelling and the colon after it.
func (s *Scanner) skipKey() bool {
	s.Space()
	return s.I < len(s.B) && s.B[s.I] == '"' && s.skipString() && s.Byte(':')
}

func (s *Scanner) literal(word string) bool {
	if len(s.B)-s.I < len(word) || string(s.B[s.I:s.I+len(word)]) != word {
		return false
	}
	s.I += len(word)
	return true
}

// skipString consumes a string at s.I (its opening quote), checking escapes and UTF-8; lone
// surrogates are valid JSON, so they pass.
func (s *Scanner) skipString() bool {
	s.I++
	_, ok := s.stringBody(false)
	return ok
}

// skipNumber consumes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *Scanner) skipNumber() bool {
	b, i := s.B, s.I
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	s.I = i
	return true
}

// SplitArray returns the elements of a JSON array, as slices of b with surrounding whitespace
// trimmed. ok is false for anything but a well-formed array this scanner takes; ask
// encoding/json then for the elements or the reason.
func SplitArray(b []byte) (elems [][]byte, ok bool) {
	s := Scanner{B: b}
	if !s.Byte('[') {
		return nil, false
	}
	if s.Byte(']') {
		return [][]byte{}, s.Done()
	}
	for {
		s.Space()
		start := s.I
		if !s.Skip() {
			return nil, false
		}
		elems = append(elems, b[start:s.I])
		if s.Byte(']') {
			return elems, s.Done()
		}
		if !s.Byte(',') {
			return nil, false
		}
	}
}
