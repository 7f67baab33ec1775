// Package apikey holds the bearer keys of Tally's HTTP APIs (ingest, accounts, query): what
// each key may do and for which accounts, kept as SHA-256 only, replaceable while serving, and
// rate-limited per key.
package apikey

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Key is a client's credential and what it may do. Only the key's SHA-256 is kept: a key file
// can hold hashes alone, so reading it gives no one a key.
type Key struct {
	Name string
	Hash [sha256.Size]byte
	// Accounts are the accounts the key may report usage of (ingest), change the terms of
	// (accounts API) or read (query API); the zero scope allows any: a trusted gateway, an
	// operator.
	Accounts Scope
	// Backfill lets the gateway report usage older than the handler's MaxEventAge.
	Backfill bool
	// Console lets the key change the terms of the accounts in its scope (activations, packs,
	// contract prices) through the accounts API; a gateway's key has no need to.
	Console bool
	// Rate is how many requests a second the key may make (bursts of as many); 0 takes the
	// keyring's default.
	Rate float64
}

// Scope is a set of account ids: exact ids and prefixes (written "acme-*").
type Scope struct {
	exact    map[string]bool
	prefixes []string
}

// Any reports whether the scope allows every account.
func (s Scope) Any() bool { return len(s.exact) == 0 && len(s.prefixes) == 0 }

// Allows reports whether account is in the scope.
func (s Scope) Allows(account string) bool {
	if s.Any() || s.exact[account] {
		return true
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(account, p) {
			return true
		}
	}
	return false
}

// ParseScope reads ids and prefixes separated by "|": "acme|globex|shop-*".
func ParseScope(spec string) (Scope, error) {
	s := Scope{exact: map[string]bool{}}
	for _, a := range strings.Split(spec, "|") {
		a = strings.TrimSpace(a)
		switch {
		case a == "":
			return Scope{}, fmt.Errorf("accounts %q: an empty entry", spec)
		case strings.HasSuffix(a, "*") && !strings.Contains(a[:len(a)-1], "*"):
			if a == "*" {
				return Scope{}, errors.New(`accounts: "*" would allow every account; leave accounts out for that`)
			}
			s.prefixes = append(s.prefixes, a[:len(a)-1])
		case strings.Contains(a, "*"):
			return Scope{}, fmt.Errorf("accounts: %q: only a trailing * (a prefix) is supported", a)
		default:
			s.exact[a] = true
		}
	}
	return s, nil
}

// minKeyLen is the shortest plain key accepted: a bearer key is a password nobody types.
const minKeyLen = 16

// Parse reads one entry: NAME=KEY or NAME=sha256:HEX (the key's SHA-256, so the secret
// need not be stored at all), then optionally ";accounts=a|b|prefix-*", ";backfill",
// ";console" and ";rate=N" (requests a second).
func Parse(entry string) (Key, error) {
	fields := strings.Split(entry, ";")
	name, secret, ok := strings.Cut(strings.TrimSpace(fields[0]), "=")
	if !ok || name == "" || secret == "" {
		return Key{}, fmt.Errorf("%q is not NAME=KEY or NAME=sha256:HEX", redact(fields[0]))
	}
	k := Key{Name: name}
	if hexSum, hashed := strings.CutPrefix(secret, "sha256:"); hashed {
		sum, err := hex.DecodeString(hexSum)
		if err != nil || len(sum) != sha256.Size {
			return Key{}, fmt.Errorf("key %q: sha256: must be followed by 64 hex digits", name)
		}
		copy(k.Hash[:], sum)
	} else {
		if len(secret) < minKeyLen {
			return Key{}, fmt.Errorf("key %q is shorter than %d characters", name, minKeyLen)
		}
		k.Hash = sha256.Sum256([]byte(secret))
	}
	for _, f := range fields[1:] {
		f = strings.TrimSpace(f)
		switch {
		case f == "backfill":
			k.Backfill = true
		case f == "console":
			k.Console = true
		case strings.HasPrefix(f, "accounts="):
			scope, err := ParseScope(strings.TrimPrefix(f, "accounts="))
			if err != nil {
				return Key{}, fmt.Errorf("key %q: %w", name, err)
			}
			k.Accounts = scope
		case strings.HasPrefix(f, "rate="):
			rate, err := strconv.ParseFloat(strings.TrimPrefix(f, "rate="), 64)
			if err != nil || !(rate > 0) || math.IsInf(rate, 1) {
				return Key{}, fmt.Errorf("key %q: rate=%s: want a positive number of requests a second", name, strings.TrimPrefix(f, "rate="))
			}
			k.Rate = rate
		default:
			return Key{}, fmt.Errorf("key %q: %q is none of accounts=…, backfill, console, rate=N", name, f)
		}
	}
	return k, nil
}

// redact keeps a key out of an error message: the name and the first characters only.
func redact(s string) string {
	if name, _, ok := strings.Cut(s, "="); ok {
		return name + "=…"
	}
	if len(s) > 4 {
		return s[:4] + "…"
	}
	return "…"
}

// Load reads key entries (Parse's form) from spec: "@FILE" holds one per line (# starts a
// comment; keep keys off the command line, where /proc shows them), anything else is entries
// separated by commas. An empty spec is no keys.
func Load(spec string) ([]Key, error) {
	if spec == "" {
		return nil, nil
	}
	text, sep := spec, ","
	if strings.HasPrefix(spec, "@") {
		raw, err := os.ReadFile(spec[1:])
		if err != nil {
			return nil, err
		}
		text, sep = string(raw), "\n"
	}
	var keys []Key
	for _, part := range strings.Split(text, sep) {
		part = strings.TrimSpace(part)
		if part == "" || strings.HasPrefix(part, "#") {
			continue
		}
		k, err := Parse(part)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Keyring is the set of API keys an API checks, replaceable while it serves (the roles re-read
// their key file on SIGHUP), so a key is added or revoked without a restart. An empty Keyring
// (or nil) lets loopback clients in, and only them. It also holds each key's request budget.
type Keyring struct {
	keys atomic.Pointer[[]Key]
	opts Options

	mu      sync.Mutex
	buckets map[string]*bucket // by key name: a reload keeps a key's budget
}

// Options are a keyring's limits.
type Options struct {
	// DefaultRate is how many requests a second a key without its own rate= may make, in bursts
	// of as many; 0: no limit. Loopback clients of a keyless ring are never limited.
	DefaultRate float64
	// Now is the rate limiter's clock; nil is time.Now. Budgets run on real time, not on a
	// billing clock.
	Now func() time.Time
}

// NewKeyring holds keys (none: loopback clients only).
func NewKeyring(keys []Key, opts Options) (*Keyring, error) {
	if !(opts.DefaultRate >= 0) || math.IsInf(opts.DefaultRate, 1) {
		return nil, fmt.Errorf("rate limit %v: want 0 (none) or a positive number of requests a second", opts.DefaultRate)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	k := &Keyring{opts: opts, buckets: map[string]*bucket{}}
	k.keys.Store(&[]Key{})
	if err := k.Replace(keys); err != nil {
		return nil, err
	}
	return k, nil
}

// Replace swaps in a new set of keys for the requests that come next. It refuses a set with
// clashing names, and an empty one while keys are held (that would turn a key-checked API into a
// loopback-only one by accident: an emptied key file, say); the keys held stay then.
func (k *Keyring) Replace(keys []Key) error {
	if err := checkKeys(keys); err != nil {
		return err
	}
	if len(keys) == 0 && k.Len() > 0 {
		return errors.New("the new key set is empty: refusing to drop every key (restart without --api-keys for loopback-only)")
	}
	k.keys.Store(&keys)
	kept := make(map[string]bool, len(keys))
	for _, key := range keys {
		kept[key.Name] = true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	maps.DeleteFunc(k.buckets, func(name string, _ *bucket) bool { return !kept[name] })
	return nil
}

// Len is how many keys are held.
func (k *Keyring) Len() int {
	return len(k.held())
}

// held are the keys in force; a nil Keyring holds none.
func (k *Keyring) held() []Key {
	if k == nil {
		return nil
	}
	return *k.keys.Load()
}

func checkKeys(keys []Key) error {
	names := map[string]bool{}
	for _, key := range keys {
		if key.Name == "" || names[key.Name] {
			return fmt.Errorf("API key names must be set and distinct (%q)", key.Name)
		}
		names[key.Name] = true
	}
	return nil
}

// loopbackKey is who a loopback client is when no keys are configured: any account, no
// back-fill, account terms too (the console of a single-machine setup).
var loopbackKey = Key{Name: "loopback", Console: true}

// Refusal is why a request was turned away before its handler ran: 401 (no known key) or 429
// (the key's budget is spent).
type Refusal struct {
	Status     int
	Detail     string
	RetryAfter time.Duration // 429: when the key has a request to spend again
}

// SetHeaders sets what the status asks for: the challenges on 401 (Basic too, so a browser asks
// for the key), Retry-After in whole seconds on 429.
func (r *Refusal) SetHeaders(h http.Header) {
	switch r.Status {
	case http.StatusUnauthorized:
		h.Add("WWW-Authenticate", `Bearer realm="tally"`)
		h.Add("WWW-Authenticate", `Basic realm="tally", charset="UTF-8"`)
	case http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(r.RetryAfter.Seconds())))))
	}
}

// Admit authenticates r and charges its key one request.
func (k *Keyring) Admit(r *http.Request) (*Key, *Refusal) {
	key, ok := k.Authenticate(r)
	if !ok {
		detail := "missing or unknown API key (Authorization: Bearer <key>)"
		if k.Len() == 0 {
			detail = "this API has no keys configured, so it lets loopback clients in and no one else (give the role its key file: --api-keys or --query-keys @FILE)"
		}
		return nil, &Refusal{Status: http.StatusUnauthorized, Detail: detail}
	}
	if wait := k.take(key); wait > 0 {
		return nil, &Refusal{Status: http.StatusTooManyRequests, RetryAfter: wait,
			Detail: fmt.Sprintf("the key %q has spent its %g requests a second; retry after %s", key.Name, k.rate(key), wait.Round(time.Millisecond))}
	}
	return key, nil
}

// Authenticate finds the request's key, given as "Authorization: Bearer KEY" or as the password
// of Basic credentials (what a browser sends; the user name is not checked): its SHA-256 is
// compared in constant time with every key's, so neither timing nor an early exit tells how
// close a guess was. Without keys, loopback clients are let in as loopbackKey.
func (k *Keyring) Authenticate(r *http.Request) (*Key, bool) {
	keys := k.held()
	if len(keys) == 0 {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		return &loopbackKey, err == nil && ip != nil && ip.IsLoopback()
	}
	const prefix = "Bearer "
	secret := r.Header.Get("Authorization")
	if len(secret) > len(prefix) && secret[:len(prefix)] == prefix {
		secret = secret[len(prefix):]
	} else if _, password, basic := r.BasicAuth(); basic && password != "" {
		secret = password
	} else {
		return nil, false
	}
	got := sha256.Sum256([]byte(secret))
	match := -1
	for i := range keys {
		if subtle.ConstantTimeCompare(got[:], keys[i].Hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return nil, false
	}
	return &keys[match], true
}

// bucket is a key's token bucket: tokens refill at the key's rate up to a burst of as many.
type bucket struct {
	tokens float64
	last   time.Time
}

func (k *Keyring) rate(key *Key) float64 {
	switch {
	case key == &loopbackKey:
		return 0
	case key.Rate > 0:
		return key.Rate
	case k == nil:
		return 0
	}
	return k.opts.DefaultRate
}

// take spends one of key's requests: 0, or how long until one is left.
func (k *Keyring) take(key *Key) time.Duration {
	rate := k.rate(key)
	if rate == 0 {
		return 0
	}
	burst := math.Max(1, rate)
	now := k.opts.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.buckets[key.Name]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		k.buckets[key.Name] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = math.Min(burst, b.tokens+elapsed.Seconds()*rate)
		b.last = now
	}
	b.tokens = math.Min(b.tokens, burst) // a reload may have lowered the rate
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration(math.Ceil((1 - b.tokens) / rate * float64(time.Second)))
}
