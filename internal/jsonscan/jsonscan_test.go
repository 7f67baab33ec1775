package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"unicode/utf8"
)

// depth is how deeply v nests, per encoding/json's tokens (-1: not one valid value).
func depth(v []byte) int {
	dec := json.NewDecoder(bytes.NewReader(v))
	d, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return deepest
		}
		if err != nil {
			return -1
		}
		if delim, ok := tok.(json.Delim); ok {
			if delim == '{' || delim == '[' {
				d++
			} else {
				d--
			}
			deepest = max(deepest, d)
		}
	}
}

var seeds = []string{
	`{"a":[1,-2.5e+3,true,false,null,"x\u00e9\n\"",{}],"b":{"c":[]}}`,
	`"\ud83d\ude00 \/ \u0000"`, `"\ud800"`, `"\ud800\u0041"`, `"é"`, "\"\xff\"", `-0.0e-0`, `01`, `1.`, `.5`, `-`,
	`[1,]`, `{"a" 1}`, `{"a":1,}`, `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
	` [ {"id":"a"} , {"id":"b"} ] `, `[]`, `[1] 2`, `tru`, `nul`, "\"\t\"",
}

// FuzzSkipAgreesWithEncodingJSON: Skip takes a value only if encoding/json does, and takes every
// valid value of moderate depth.
func FuzzSkipAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Scanner{B: b}
		took := s.Skip() && s.Done()
		valid := json.Valid(b) && utf8.Valid(b)
		if took && !valid {
			t.Fatalf("Skip took %q, which encoding/json refuses", b)
		}
		if valid && !took && depth(b) < MaxDepth {
			t.Fatalf("Skip refused %q, valid JSON of depth %d", b, depth(b))
		}
	})
}

// FuzzStringAgreesWithEncodingJSON: what String returns is what encoding/json unquotes.
func FuzzStringAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Scanner{B: b}
		v, ok := s.String()
		if !ok || !s.Done() {
			return
		}
		var want string
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("String took %q as %q; encoding/json: %v", b, v, err)
		}
		if string(v) != want {
			t.Fatalf("String read %q as %q; encoding/json as %q", b, v, want)
		}
	})
}

// FuzzSplitArrayAgreesWithEncodingJSON: SplitArray gives encoding/json's elements, or refuses.
func FuzzSplitArrayAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		elems, ok := SplitArray(b)
		var want []json.RawMessage
		err := json.Unmarshal(b, &want)
		if !ok {
			if err == nil && want != nil && utf8.Valid(b) && depth(b) < MaxDepth { // null is no array
				t.Fatalf("SplitArray refused %q, an array encoding/json splits", b)
			}
			return
		}
		if err != nil {
			t.Fatalf("SplitArray split %q; encoding/json: %v", b, err)
		}
		if len(elems) != len(want) {
			t.Fatalf("%q: %d elements; encoding/json %d", b, len(elems), len(want))
		}
		for i := range elems {
			if !bytes.Equal(elems[i], want[i]) {
				t.Fatalf("%q element %d: %q; encoding/json %q", b, i, elems[i], want[i])
			}
		}
	})
}

func TestSmallInt(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "1000000": 1_000_000, " 42 ": 42} {
		s := Scanner{B: []byte(in)}
		if n, ok := s.SmallInt(7); !ok || n != want {
			t.Errorf("%q: %d %v; want %d", in, n, ok, want)
		}
	}
	for _, in := range []string{"0", "01", "10000000", "1.0", "1e3", "-1", "", "x", "2+"} {
		s := Scanner{B: []byte(in)}
		if n, ok := s.SmallInt(7); ok {
			t.Errorf("%q: took %d", in, n)
		}
	}
}

func BenchmarkSplitArray(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"specversion":"1.0","id":"req-000123456","source":"//gw/eu-1","type":"tally.usage.v1","subject":"acct-004211","time":"2026-10-05T11:59:00.123Z","datacontenttype":"application/json","data":{"account":"acct-004211","service":"image-tagging","calls":3}}`)
	}
	buf.WriteByte(']')
	body := buf.Bytes()
	b.SetBytes(int64(len(body)))
	b.Run("jsonscan", func(b *testing.B) {
		for range b.N {
			if _, ok := SplitArray(body); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for range b.N {
			var raws []json.RawMessage
			if err := json.Unmarshal(body, &raws); err != nil {
				b.Fatal(err)
			}
		}
	})
}
