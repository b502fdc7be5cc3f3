package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Sentinel errors callers test with errors.Is. The errors Authenticate and Check return wrap
// them and carry RabbitMQ's text as their message.
var (
	ErrBadCredentials = errors.New("invalid credentials")
	ErrLoopbackOnly   = errors.New("user can only connect via localhost")
	ErrAccessRefused  = errors.New("access refused")
	ErrNoUser         = errors.New("no such user")
	ErrBadResponse    = errors.New("invalid SASL response")
)

// Error is a refusal with RabbitMQ's text, wrapping one of the sentinel errors.
type Error struct {
	Kind error  // ErrBadCredentials, ErrLoopbackOnly, ErrAccessRefused, ErrBadResponse
	Text string // RabbitMQ's text, e.g. "user 'u' - invalid credentials"
}

func (e *Error) Error() string { return e.Text }

// Unwrap lets errors.Is find the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

// User is an account of the internal backend.
type User struct {
	Name string
	// PasswordHash is rabbit_password_hashing_sha256's format: a 4-byte salt followed by
	// SHA-256(salt ++ password). Empty means the user cannot log in with a password.
	PasswordHash []byte
	Tags         []string
	// LoopbackOnly users may connect only from a loopback address (RabbitMQ's loopback_users,
	// which holds guest by default).
	LoopbackOnly bool
}

// Permission is a user's rights in one vhost: three regular expressions over resource names
// (RabbitMQ semantics: unanchored; "" matches nothing, ".*" everything).
type Permission struct {
	Configure, Write, Read string
}

// Access is the kind of operation a permission check is for.
type Access uint8

// The three permission kinds of RabbitMQ's access control.
const (
	Configure Access = iota
	Write
	Read
)

func (a Access) String() string {
	switch a {
	case Configure:
		return "configure"
	case Write:
		return "write"
	case Read:
		return "read"
	}
	return "unknown"
}

type compiledPerm struct {
	p   Permission
	res [3]*regexp.Regexp
	// all: the expression is ".*", which matches every name (unanchored, as RabbitMQ's
	// re:run matches: the empty match at the start always succeeds). It is what most
	// permissions are (RabbitMQ's default guest included), and running the regexp for every
	// publish was about 2 % of Parley's CPU in MQTT fan-in, which checks each PUBLISH.
	all [3]bool
}

// Store holds users and permissions. It is safe for concurrent use.
type Store struct {
	mu    sync.RWMutex
	users map[string]*User
	perms map[string]map[string]*compiledPerm // user -> vhost -> permission
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{users: map[string]*User{}, perms: map[string]map[string]*compiledPerm{}}
}

// DefaultStore is what a fresh RabbitMQ has: user guest, password guest, tag administrator,
// loopback-only, with full permissions on vhost "/".
func DefaultStore() *Store {
	s := NewStore()
	if err := s.AddUser("guest", "guest", []string{"administrator"}, true); err != nil {
		panic(err) // cannot happen on an empty store
	}
	if err := s.SetPermission("guest", "/", Permission{Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
		panic(err)
	}
	return s
}

// HashPassword returns rabbit_password_hashing_sha256's hash of password with salt:
// salt ++ SHA-256(salt ++ password), as RabbitMQ stores it (base64 in definitions files).
func HashPassword(password string, salt [4]byte) []byte {
	h := sha256.New()
	h.Write(salt[:])
	h.Write([]byte(password))
	return h.Sum(salt[:len(salt):len(salt)])
}

// CheckPassword reports whether password matches a HashPassword hash, in constant time.
func CheckPassword(hash []byte, password string) bool {
	if len(hash) != 4+sha256.Size {
		return false
	}
	var salt [4]byte
	copy(salt[:], hash)
	return subtle.ConstantTimeCompare(hash, HashPassword(password, salt)) == 1
}

// AddUser adds (or replaces) a user, hashing the password with a fresh random salt. An empty
// password leaves the user without one (it can then only log in by other means).
func (s *Store) AddUser(name, password string, tags []string, loopbackOnly bool) error {
	var hash []byte
	if password != "" {
		var salt [4]byte
		if _, err := rand.Read(salt[:]); err != nil {
			return fmt.Errorf("add user %q: salt: %w", name, err)
		}
		hash = HashPassword(password, salt)
	}
	return s.AddUserWithHash(name, hash, tags, loopbackOnly)
}

// AddUserWithHash adds (or replaces) a user whose password is already hashed (a definitions
// import).
func (s *Store) AddUserWithHash(name string, hash []byte, tags []string, loopbackOnly bool) error {
	if name == "" {
		return fmt.Errorf("add user: %w", errors.New("empty user name"))
	}
	u := &User{Name: name, PasswordHash: slices.Clone(hash), Tags: slices.Clone(tags), LoopbackOnly: loopbackOnly}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[name] = u
	return nil
}

// DeleteUser removes a user and its permissions.
func (s *Store) DeleteUser(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[name]; !ok {
		return fmt.Errorf("delete user %q: %w", name, ErrNoUser)
	}
	delete(s.users, name)
	delete(s.perms, name)
	return nil
}

// User returns a copy of a user.
func (s *Store) User(name string) (User, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, ok := s.users[name]
	if !ok {
		return User{}, false
	}
	c := *u
	c.PasswordHash, c.Tags = slices.Clone(u.PasswordHash), slices.Clone(u.Tags)
	return c, true
}

// Users lists the user names in order.
func (s *Store) Users() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.users))
	for n := range s.users {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// SetPermission grants a user its permissions in a vhost, replacing earlier ones. The
// expressions must compile.
func (s *Store) SetPermission(user, vhost string, p Permission) error {
	cp := &compiledPerm{p: p}
	for i, expr := range []string{p.Configure, p.Write, p.Read} {
		if expr == "" {
			expr = "^$" // RabbitMQ: an empty permission matches nothing
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return fmt.Errorf("set permission for %q in %q: %w", user, vhost, err)
		}
		cp.res[i] = re
		cp.all[i] = expr == ".*"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[user]; !ok {
		return fmt.Errorf("set permission for %q: %w", user, ErrNoUser)
	}
	m := s.perms[user]
	if m == nil {
		m = map[string]*compiledPerm{}
		s.perms[user] = m
	}
	m[vhost] = cp
	return nil
}

// ClearPermission removes a user's permissions in a vhost.
func (s *Store) ClearPermission(user, vhost string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.perms[user], vhost)
}

// Permission returns a user's permissions in a vhost.
func (s *Store) Permission(user, vhost string) (Permission, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cp, ok := s.perms[user][vhost]
	if !ok {
		return Permission{}, false
	}
	return cp.p, true
}

// Authenticate checks a user's password as rabbit_auth_backend_internal does, then the
// loopback restriction as rabbit_reader does after a successful login. remote may be nil for
// connections with no address (in-process), which count as loopback. The errors wrap
// ErrBadCredentials or ErrLoopbackOnly and carry RabbitMQ's text, which an AMQP adapter puts
// after "PLAIN login refused: ".
func (s *Store) Authenticate(user, password string, remote net.Addr) (*User, error) {
	if password == "" {
		return nil, &Error{Kind: ErrBadCredentials, Text: "user '" + user + "' attempted to log in with a blank " +
			"password, which is prohibited by the internal authN backend. To use TLS/x509 certificate-based " +
			"authentication, see the rabbitmq_auth_mechanism_ssl plugin and configure the client to use the " +
			"EXTERNAL authentication mechanism. Alternatively change the password for the user to be non-blank."}
	}
	s.mu.RLock()
	u, ok := s.users[user]
	s.mu.RUnlock()
	if !ok || !CheckPassword(u.PasswordHash, password) {
		return nil, &Error{Kind: ErrBadCredentials, Text: "user '" + user + "' - invalid credentials"}
	}
	if u.LoopbackOnly && remote != nil && !IsLoopback(remote) {
		return nil, &Error{Kind: ErrLoopbackOnly, Text: "user '" + user + "' can only connect via localhost"}
	}
	c := *u
	return &c, nil
}

// AuthenticateExternal logs a user in without a password (SASL EXTERNAL, the name taken from
// a verified TLS client certificate), as rabbit_auth_backend_internal does for an empty
// property list: the user must exist.
func (s *Store) AuthenticateExternal(user string, remote net.Addr) (*User, error) {
	s.mu.RLock()
	u, ok := s.users[user]
	s.mu.RUnlock()
	if !ok {
		return nil, &Error{Kind: ErrBadCredentials, Text: "user '" + user + "' - invalid credentials"}
	}
	if u.LoopbackOnly && remote != nil && !IsLoopback(remote) {
		return nil, &Error{Kind: ErrLoopbackOnly, Text: "user '" + user + "' can only connect via localhost"}
	}
	c := *u
	return &c, nil
}

// CanAccessVHost reports whether the user has any permissions in the vhost
// (rabbit_auth_backend_internal:check_vhost_access). When it does not, RabbitMQ refuses
// connection.open with 530 NOT_ALLOWED, VHostRefused's text.
func (s *Store) CanAccessVHost(user, vhost string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.perms[user][vhost]
	return ok
}

// VHostRefused is RabbitMQ's text for a refused connection.open (530 NOT_ALLOWED).
func VHostRefused(user, vhost string) string {
	return "access to vhost '" + vhost + "' refused for user '" + user + "'"
}

// Check tests a user's permission of kind on a resource ("queue" or "exchange") in a vhost.
// The default exchange is checked under the name "amq.default", as RabbitMQ does. It returns
// nil or an *Error wrapping ErrAccessRefused with RabbitMQ's text ("access to queue 'q' in
// vhost '/' refused for user 'u'"), which AMQP reports as 403 ACCESS_REFUSED.
func (s *Store) Check(user, vhost string, kind Access, resourceKind, name string) error {
	if resourceKind == "exchange" && name == "" {
		name = "amq.default"
	}
	s.mu.RLock()
	cp, ok := s.perms[user][vhost]
	s.mu.RUnlock()
	if ok && int(kind) < len(cp.res) && (cp.all[kind] || cp.res[kind].MatchString(name)) {
		return nil
	}
	return &Error{Kind: ErrAccessRefused, Text: "access to " + resourceKind + " '" + name + "' in vhost '" + vhost +
		"' refused for user '" + user + "'"}
}

// ParsePlain splits a SASL PLAIN response (RFC 4616) as rabbit_auth_mechanism_plain does:
// it must be "\x00user\x00password" exactly — RabbitMQ accepts no authorization identity and
// nothing after the password. The error wraps ErrBadResponse with RabbitMQ's text ("response
// <<...>> invalid", sent as 502 SYNTAX_ERROR).
func ParsePlain(response []byte) (user, password string, err error) {
	bad := func() (string, string, error) {
		return "", "", &Error{Kind: ErrBadResponse, Text: "response " + erlangBinary(response) + " invalid"}
	}
	if len(response) == 0 || response[0] != 0 {
		return bad()
	}
	rest := response[1:]
	i := indexZero(rest)
	user, rest = string(rest[:i]), rest[i:]
	if len(rest) == 0 || rest[0] != 0 {
		return bad()
	}
	rest = rest[1:]
	i = indexZero(rest)
	if i != len(rest) {
		return bad()
	}
	return user, string(rest), nil
}

func indexZero(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// erlangBinary prints bytes as Erlang's ~p does: <<"text">> when printable, else <<1,2,3>>.
func erlangBinary(b []byte) string {
	printable := true
	for _, c := range b {
		if c < 32 || c > 126 || c == '"' || c == '\\' {
			printable = false
			break
		}
	}
	if printable {
		return `<<"` + string(b) + `">>`
	}
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = strconv.Itoa(int(c))
	}
	return "<<" + strings.Join(parts, ",") + ">>"
}

// IsLoopback reports whether addr is a loopback address (127.0.0.0/8, ::1, or an
// IPv4-mapped loopback), or a Unix socket, as rabbit_net:is_loopback/1 treats local peers.
func IsLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UDPAddr:
		return a.IP.IsLoopback()
	case *net.IPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	case nil:
		return false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		host := addr.String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ip, err := netip.ParseAddr(host)
		return err == nil && ip.Unmap().IsLoopback()
	}
	return ap.Addr().Unmap().IsLoopback()
}
