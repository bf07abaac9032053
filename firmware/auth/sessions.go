package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/store"
)

func jsonUnmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }

// lastSeenGranularity limits session writes: LastSeen is refreshed at most
// this often (a third of the idle timeout when that is shorter), so idle
// expiry is exact to within this much.
const lastSeenGranularity = 10 * time.Second

// Session is a browser login. It is stored under the hash of its cookie
// secret; the hash doubles as the public ID used to list and revoke it.
type Session struct {
	ID          string      `json:"id"`
	Username    string      `json:"username"`
	Created     time.Time   `json:"created"`
	LastSeen    time.Time   `json:"last_seen"`
	Expires     time.Time   `json:"expires"` // absolute end
	Source      string      `json:"source"`
	UserAgent   string      `json:"user_agent"`
	CSRFStored  string      `json:"csrf,omitempty"`
	Restriction Restriction `json:"restriction,omitempty"`
}

// NewSession is handed to the HTTP layer once, to set the cookie.
type NewSession struct {
	Secret  string
	ID      string
	CSRF    string
	Expires time.Time
}

func (s *Service) createSession(tx *store.Tx, a Account, c Client, p Policy, r Restriction, now time.Time) (NewSession, error) {
	secret := randomToken(32)
	ua := c.UserAgent
	if len(ua) > 200 {
		ua = ua[:200]
	}
	sess := Session{ID: secretID(secret), Username: a.Username, Created: now, LastSeen: now,
		Expires: now.Add(secs(p.AbsoluteSeconds)), Source: c.String(), UserAgent: strings.ToValidUTF8(ua, "?"),
		CSRFStored: randomToken(32), Restriction: r}
	if err := tx.Put(bSessions, sess.ID, sess); err != nil {
		return NewSession{}, err
	}
	return NewSession{Secret: secret, ID: sess.ID, CSRF: sess.CSRFStored, Expires: sess.Expires}, nil
}

// SessionPrincipal resolves a session cookie. Expired sessions are deleted.
// The account is read on every request so role changes and deletions apply
// at once.
func (s *Service) SessionPrincipal(secret string) (Principal, error) {
	if secret == "" || len(secret) > 128 {
		return Principal{}, ErrNoSession
	}
	p, err := s.Policy()
	if err != nil {
		return Principal{}, err
	}
	now := s.clock.Now()
	id := secretID(secret)
	var sess Session
	var a Account
	var ok bool
	err = s.db.View(func(tx *store.Tx) error {
		if ok, err = tx.Get(bSessions, id, &sess); err != nil || !ok {
			return err
		}
		a, ok, err = getAccount(tx, sess.Username)
		return err
	})
	if err != nil {
		return Principal{}, err
	}
	if !ok {
		return Principal{}, ErrNoSession
	}
	if now.Sub(sess.LastSeen) > secs(p.IdleSeconds) || !now.Before(sess.Expires) {
		_ = s.db.Update(func(tx *store.Tx) error { return tx.Delete(bSessions, id) })
		return Principal{}, ErrNoSession
	}
	if now.Sub(sess.LastSeen) >= min(lastSeenGranularity, secs(p.IdleSeconds)/3) {
		sess.LastSeen = now
		_ = s.db.Update(func(tx *store.Tx) error {
			var cur Session
			if ok, err := tx.Get(bSessions, id, &cur); err != nil || !ok {
				return err
			}
			return tx.Put(bSessions, id, sess)
		})
	}
	return Principal{Username: a.Username, Role: a.Role, SessionID: id, CSRF: sess.CSRFStored, Restriction: sess.Restriction}, nil
}

// Sessions lists live sessions of username, or of everyone when username is "".
func (s *Service) Sessions(username string) ([]Session, error) {
	p, err := s.Policy()
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	var out []Session
	err = s.db.View(func(tx *store.Tx) error {
		return tx.ForEach(bSessions, func(_ string, raw []byte) error {
			var sess Session
			if err := json.Unmarshal(raw, &sess); err != nil {
				return err
			}
			live := now.Sub(sess.LastSeen) <= secs(p.IdleSeconds) && now.Before(sess.Expires)
			if live && (username == "" || sess.Username == username) {
				sess.CSRFStored = ""
				out = append(out, sess)
			}
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Session) int { return b.LastSeen.Compare(a.LastSeen) })
	return out, err
}

// RevokeSession ends one session. owner "" lets admins revoke anyone's.
func (s *Service) RevokeSession(actor Principal, source, owner, id string) error {
	return s.db.Update(func(tx *store.Tx) error {
		var sess Session
		ok, err := tx.Get(bSessions, id, &sess)
		if err != nil {
			return err
		}
		if !ok || (owner != "" && sess.Username != owner) {
			return ErrNotFound
		}
		if err := tx.Delete(bSessions, id); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "session.revoke", Target: sess.Username + " " + id[:8]})
	})
}

// Logout ends the caller's own session.
func (s *Service) Logout(p Principal, source string) error {
	if p.SessionID == "" {
		return nil
	}
	err := s.db.Update(func(tx *store.Tx) error {
		if err := tx.Delete(bSessions, p.SessionID); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: p.Actor(), Source: source, Action: "auth.logout"})
	})
	if err == nil && s.conns != nil {
		s.conns.Record(connlog.Entry{Time: s.clock.Now(), Kind: connlog.AdminLogout, Source: source, User: p.Username, Method: "session", Result: connlog.OK})
	}
	return err
}

func revokeSessionsExcept(tx *store.Tx, username, keep string) error {
	var ids []string
	err := tx.ForEach(bSessions, func(k string, raw []byte) error {
		var sess Session
		if err := json.Unmarshal(raw, &sess); err != nil {
			return err
		}
		if sess.Username == username && k != keep {
			ids = append(ids, k)
		}
		return nil
	})
	for _, id := range ids {
		err = errors.Join(err, tx.Delete(bSessions, id))
	}
	return err
}

func deleteOwned(tx *store.Tx, username string) error {
	err := revokeSessionsExcept(tx, username, "")
	var ids []string
	err = errors.Join(err, tx.ForEach(bTokens, func(k string, raw []byte) error {
		var t Token
		if err := json.Unmarshal(raw, &t); err != nil {
			return err
		}
		if t.Username == username {
			ids = append(ids, k)
		}
		return nil
	}))
	for _, id := range ids {
		err = errors.Join(err, tx.Delete(bTokens, id))
	}
	return err
}

// Token is an API token. Like sessions it is stored under its secret's hash.
type Token struct {
	ID       string    `json:"id"`
	Username string    `json:"username"`
	Name     string    `json:"name"`
	Scopes   []string  `json:"scopes"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
}

// TokenPrefix marks edgepbx API tokens (helps secret scanners).
const TokenPrefix = "ebx_"

// ErrBadToken covers bad token requests.
var ErrBadToken = errors.New("invalid token request")

// CreateToken issues an API token for the caller after re-authentication;
// the secret is returned once.
func (s *Service) CreateToken(ctx context.Context, actor Principal, c Client, pr Proof, name string, scopes []string, days int) (string, Token, error) {
	source := c.String()
	p, err := s.Policy()
	if err != nil {
		return "", Token{}, err
	}
	if days == 0 {
		days = p.TokenDays
	}
	if days < 1 || days > 365 {
		return "", Token{}, fmt.Errorf("%w: days must be 1..365", ErrBadToken)
	}
	if name == "" || len(name) > 64 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", Token{}, fmt.Errorf("%w: name must be 1..64 printable characters", ErrBadToken)
	}
	if len(scopes) == 0 || len(scopes) > len(Scopes) {
		return "", Token{}, fmt.Errorf("%w: scopes must be some of %v", ErrBadToken, Scopes)
	}
	for _, sc := range scopes {
		if !slices.Contains(Scopes, sc) {
			return "", Token{}, fmt.Errorf("%w: unknown scope %q", ErrBadToken, sc)
		}
	}
	if slices.Contains(scopes, ScopeMetrics) {
		if len(scopes) != 1 {
			return "", Token{}, fmt.Errorf("%w: the %s scope cannot be combined with others", ErrBadToken, ScopeMetrics)
		}
		if !RoleCan(actor.Role, PermMetricsRead) {
			return "", Token{}, fmt.Errorf("%w: role %s may not read metrics", ErrBadToken, actor.Role)
		}
	}
	if err := s.reauth(ctx, actor, c, pr, "token.create"); err != nil {
		return "", Token{}, err
	}
	now := s.clock.Now()
	secret := TokenPrefix + randomToken(32)
	t := Token{ID: secretID(secret), Username: actor.Username, Name: name, Scopes: scopes, Created: now,
		Expires: now.Add(time.Duration(days) * 24 * time.Hour)}
	err = s.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(bTokens, t.ID, t); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "token.create", Target: t.ID[:8],
			After: map[string]any{"name": name, "scopes": scopes, "expires": t.Expires}})
	})
	return secret, t, err
}

// TokenPrincipal resolves a bearer token.
func (s *Service) TokenPrincipal(secret string) (Principal, error) {
	if !strings.HasPrefix(secret, TokenPrefix) || len(secret) > 128 {
		return Principal{}, ErrNoSession
	}
	now := s.clock.Now()
	var t Token
	var a Account
	var ok bool
	err := s.db.View(func(tx *store.Tx) error {
		var err error
		if ok, err = tx.Get(bTokens, secretID(secret), &t); err != nil || !ok {
			return err
		}
		a, ok, err = getAccount(tx, t.Username)
		return err
	})
	if err != nil {
		return Principal{}, err
	}
	if !ok || !now.Before(t.Expires) {
		return Principal{}, ErrNoSession
	}
	return Principal{Username: a.Username, Role: a.Role, TokenID: t.ID[:8], Scopes: t.Scopes}, nil
}

// Tokens lists username's tokens (all users' when username is "").
func (s *Service) Tokens(username string) ([]Token, error) {
	var out []Token
	err := s.db.View(func(tx *store.Tx) error {
		return tx.ForEach(bTokens, func(_ string, raw []byte) error {
			var t Token
			if err := json.Unmarshal(raw, &t); err != nil {
				return err
			}
			if username == "" || t.Username == username {
				t.ID = t.ID[:8] // the full hash stays inside
				out = append(out, t)
			}
			return nil
		})
	})
	return out, err
}

// RevokeToken deletes a token by its short ID; owner "" lets admins revoke any.
func (s *Service) RevokeToken(actor Principal, source, owner, shortID string) error {
	if len(shortID) != 8 {
		return ErrNotFound
	}
	return s.db.Update(func(tx *store.Tx) error {
		var key string
		var tok Token
		err := tx.ForEach(bTokens, func(k string, raw []byte) error {
			if strings.HasPrefix(k, shortID) {
				key = k
				return json.Unmarshal(raw, &tok)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if key == "" || (owner != "" && tok.Username != owner) {
			return ErrNotFound
		}
		if err := tx.Delete(bTokens, key); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "token.revoke", Target: shortID})
	})
}

// HistoryEntry is one login attempt.
type HistoryEntry struct {
	Time        time.Time `json:"time"`
	Username    string    `json:"username"`
	Source      string    `json:"source"`
	Outcome     string    `json:"outcome"`
	NewLocation bool      `json:"new_location,omitempty"`
	Country     string    `json:"country,omitempty"` // GeoIP country of Source, when a database is loaded
	NewCountry  bool      `json:"new_country,omitempty"`
}

var errStop = errors.New("stop")

// history records a login attempt and drops entries past the retention.
func (s *Service) history(c Client, username, outcome string, loc location) {
	now := s.clock.Now()
	if len(username) > 64 {
		username = username[:64]
	}
	username = strings.ToValidUTF8(username, "?")
	p, err := s.Policy()
	if err != nil {
		return
	}
	cutoff := historyKey(now.Add(-time.Duration(p.HistoryDays)*24*time.Hour), "")
	err = s.db.Update(func(tx *store.Tx) error {
		var old []string
		err := tx.ForEach(bHistory, func(k string, _ []byte) error {
			if k >= cutoff {
				return errStop
			}
			old = append(old, k)
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		for _, k := range old {
			if err := tx.Delete(bHistory, k); err != nil {
				return err
			}
		}
		source := c.String()
		if s.anon != nil && c.Addr.IsValid() {
			source = s.anon(c.Addr.Unmap(), now)
		}
		return tx.Put(bHistory, historyKey(now, randomToken(6)), HistoryEntry{Time: now, Username: username, Source: source, Outcome: outcome,
			NewLocation: loc.isNew(), Country: loc.country, NewCountry: loc.newCountry})
	})
	if err != nil {
		s.log.Error("login history", "err", err)
	}
}

func historyKey(t time.Time, suffix string) string {
	return fmt.Sprintf("%020d-%s", t.UnixNano(), suffix)
}

// History returns login attempts, newest first, for username ("" for all).
func (s *Service) History(username string, limit int) ([]HistoryEntry, error) {
	var out []HistoryEntry
	err := s.db.View(func(tx *store.Tx) error {
		return tx.ForEach(bHistory, func(_ string, raw []byte) error {
			var h HistoryEntry
			if err := json.Unmarshal(raw, &h); err != nil {
				return err
			}
			if username == "" || h.Username == username {
				out = append(out, h)
			}
			return nil
		})
	})
	slices.Reverse(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, err
}

// clearRestriction lifts restriction r from session id once it is satisfied.
func clearRestriction(tx *store.Tx, id string, r Restriction) error {
	if id == "" {
		return nil
	}
	var sess Session
	ok, err := tx.Get(bSessions, id, &sess)
	if err != nil || !ok || sess.Restriction != r {
		return err
	}
	sess.Restriction = RestrictNone
	return tx.Put(bSessions, id, sess)
}
