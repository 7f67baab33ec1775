package cloudevent

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/textproto"
	"net/url"
	"sort"
	"strings"
	"unicode/utf8"
)

// The HTTP protocol binding's binary mode (CloudEvents HTTP binding 1.0, §3.1): attributes in
// ce-* headers, the data as the body, its media type in Content-Type. It is the default of the
// official SDKs (sdk-go's client.Send), so a gateway following their documentation sends it.

// BinaryHeader is the header whose presence marks a binary-mode request.
const BinaryHeader = "Ce-Specversion"

// IsBinary reports whether h carries a binary-mode event.
func IsBinary(h http.Header) bool { return h.Get(BinaryHeader) != "" }

// FromBinary renders a binary-mode event (its headers and body) as the structured-mode JSON
// Decode reads, so one decoder judges both modes: each ce-<name> header becomes the attribute
// <name> (percent-decoded, as the binding encodes values), Content-Type becomes datacontenttype
// and the body becomes data, which must be JSON.
func FromBinary(h http.Header, body []byte) ([]byte, error) {
	attrs := map[string]string{}
	for key, values := range h {
		k := strings.ToLower(textproto.CanonicalMIMEHeaderKey(key))
		if !strings.HasPrefix(k, "ce-") || len(values) == 0 {
			continue
		}
		name := strings.TrimPrefix(k, "ce-")
		if name == "" || name == "data" || name == "data_base64" {
			return nil, reject("header %s is not a CloudEvents attribute", key)
		}
		v, err := url.PathUnescape(values[0])
		if err != nil {
			return nil, reject("header %s: %q is not percent-encoded properly", key, values[0])
		}
		if !utf8.ValidString(v) {
			return nil, reject("header %s is not UTF-8 once percent-decoded", key)
		}
		attrs[name] = v
	}
	if ct := h.Get("Content-Type"); ct != "" {
		if !IsJSONMediaType(ct) {
			return nil, reject("Content-Type %q: the data of a binary-mode event must be JSON", ct)
		}
		attrs["datacontenttype"] = ct
	}
	data := bytes.TrimSpace(body)
	if !json.Valid(data) {
		return nil, reject("the body of a binary-mode event (its data) is not JSON")
	}
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteByte('{')
	for _, n := range names {
		k, _ := json.Marshal(n)
		v, _ := json.Marshal(attrs[n])
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
		b.WriteByte(',')
	}
	b.WriteString(`"data":`)
	b.Write(data)
	b.WriteByte('}')
	return b.Bytes(), nil
}
