package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
)

// APIKey is a gateway's credential and what it may report. Only the key's SHA-256 is kept: a
// key file can hold hashes alone, so reading it gives no one a key.
type APIKey struct {
	Name string
	Hash [sha256.Size]byte
	// Accounts are the accounts the gateway may report usage of; the zero scope allows any.
	Accounts AccountScope
	// Backfill lets the gateway report usage older than the handler's MaxEventAge.
	Backfill bool
	// Console lets the key change the terms of the accounts in its scope (activations, packs,
	// contract prices) through the accounts API; a gateway's key has no need to.
	Console bool
}

// AccountScope is a set of account ids: exact ids and prefixes (written "acme-*").
type AccountScope struct {
	exact    map[string]bool
	prefixes []string
}

// Any reports whether the scope allows every account.
func (s AccountScope) Any() bool { return len(s.exact) == 0 && len(s.prefixes) == 0 }

// Allows reports whether account is in the scope.
func (s AccountScope) Allows(account string) bool {
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

// ParseAccountScope reads ids and prefixes separated by "|": "acme|globex|shop-*".
func ParseAccountScope(spec string) (AccountScope, error) {
	s := AccountScope{exact: map[string]bool{}}
	for _, a := range strings.Split(spec, "|") {
		a = strings.TrimSpace(a)
		switch {
		case a == "":
			return AccountScope{}, fmt.Errorf("accounts %q: an empty entry", spec)
		case strings.HasSuffix(a, "*") && !strings.Contains(a[:len(a)-1], "*"):
			if a == "*" {
				return AccountScope{}, errors.New(`accounts: "*" would allow every account; leave accounts out for that`)
			}
			s.prefixes = append(s.prefixes, a[:len(a)-1])
		case strings.Contains(a, "*"):
			return AccountScope{}, fmt.Errorf("accounts: %q: only a trailing * (a prefix) is supported", a)
		default:
			s.exact[a] = true
		}
	}
	return s, nil
}

// minKeyLen is the shortest plain key accepted: a bearer key is a password nobody types.
const minKeyLen = 16

// ParseAPIKey reads one entry: NAME=KEY or NAME=sha256:HEX (the key's SHA-256, so the secret
// need not be stored at all), then optionally ";accounts=a|b|prefix-*", ";backfill" and
// ";console".
func ParseAPIKey(entry string) (APIKey, error) {
	fields := strings.Split(entry, ";")
	name, secret, ok := strings.Cut(strings.TrimSpace(fields[0]), "=")
	if !ok || name == "" || secret == "" {
		return APIKey{}, fmt.Errorf("%q is not NAME=KEY or NAME=sha256:HEX", redact(fields[0]))
	}
	k := APIKey{Name: name}
	if hexSum, hashed := strings.CutPrefix(secret, "sha256:"); hashed {
		sum, err := hex.DecodeString(hexSum)
		if err != nil || len(sum) != sha256.Size {
			return APIKey{}, fmt.Errorf("key %q: sha256: must be followed by 64 hex digits", name)
		}
		copy(k.Hash[:], sum)
	} else {
		if len(secret) < minKeyLen {
			return APIKey{}, fmt.Errorf("key %q is shorter than %d characters", name, minKeyLen)
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
			scope, err := ParseAccountScope(strings.TrimPrefix(f, "accounts="))
			if err != nil {
				return APIKey{}, fmt.Errorf("key %q: %w", name, err)
			}
			k.Accounts = scope
		default:
			return APIKey{}, fmt.Errorf("key %q: %q is none of accounts=…, backfill, console", name, f)
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

// Keyring is the set of API keys the ingest and accounts APIs check, replaceable while they
// serve (the ingest role re-reads its key file on SIGHUP), so a key is added or revoked
// without a restart. A nil or empty Keyring lets loopback clients in, and only them.
type Keyring struct {
	keys atomic.Pointer[[]APIKey]
}

// NewKeyring holds keys (none: loopback clients only).
func NewKeyring(keys []APIKey) (*Keyring, error) {
	k := &Keyring{}
	k.keys.Store(&[]APIKey{})
	if err := k.Replace(keys); err != nil {
		return nil, err
	}
	return k, nil
}

// Replace swaps in a new set of keys for the requests that come next. It refuses a set with
// clashing names, and an empty one while keys are held (that would turn a key-checked API into a
// loopback-only one by accident: an emptied key file, say); the keys held stay then.
func (k *Keyring) Replace(keys []APIKey) error {
	if err := checkKeys(keys); err != nil {
		return err
	}
	if len(keys) == 0 && k.Len() > 0 {
		return errors.New("the new key set is empty: refusing to drop every key (restart without --api-keys for loopback-only)")
	}
	k.keys.Store(&keys)
	return nil
}

// Len is how many keys are held.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(*k.keys.Load())
}

func checkKeys(keys []APIKey) error {
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
var loopbackKey = APIKey{Name: "loopback", Console: true}

// authenticate finds the request's key: its SHA-256 compared in constant time with every key's,
// so neither timing nor an early exit tells how close a guess was. Without keys, loopback
// clients are let in as loopbackKey.
func (k *Keyring) authenticate(r *http.Request) (*APIKey, bool) {
	var keys []APIKey
	if k != nil {
		keys = *k.keys.Load()
	}
	if len(keys) == 0 {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		return &loopbackKey, err == nil && ip != nil && ip.IsLoopback()
	}
	const prefix = "Bearer "
	auth := r.Header.Get("Authorization")
	if len(auth) <= len(prefix) || auth[:len(prefix)] != prefix {
		return nil, false
	}
	got := sha256.Sum256([]byte(auth[len(prefix):]))
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
