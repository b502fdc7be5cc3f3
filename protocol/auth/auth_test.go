package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"regexp"
	"sync"
	"testing"
)

func TestHashPasswordFormat(t *testing.T) {
	salt := [4]byte{0x90, 0x8D, 0xC6, 0x0A}
	h := HashPassword("test12", salt)
	sum := sha256.Sum256(append(salt[:], "test12"...))
	want := append(salt[:], sum[:]...)
	if string(h) != string(want) {
		t.Fatalf("HashPassword = %x, want %x", h, want)
	}
	// The base64 form is what rabbitmqctl export_definitions writes as password_hash.
	if got := base64.StdEncoding.EncodeToString(h); len(got) != 48 {
		t.Fatalf("base64 hash %q has length %d, want 48", got, len(got))
	}
	if !CheckPassword(h, "test12") || CheckPassword(h, "test13") || CheckPassword(h[:10], "test12") {
		t.Fatal("CheckPassword disagrees with HashPassword")
	}
	if salt != [4]byte{0x90, 0x8D, 0xC6, 0x0A} {
		t.Fatal("HashPassword modified its salt")
	}
}

func TestKnownRabbitMQHash(t *testing.T) {
	// A hash RabbitMQ's own documentation works through (rabbit_password_hashing_sha256):
	// salt 908DC60A, password "test12".
	h, err := base64.StdEncoding.DecodeString("kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR")
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, "test12") {
		t.Fatal("RabbitMQ's documented hash of test12 does not check")
	}
}

func tcp(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 5672} }

func TestAuthenticate(t *testing.T) {
	s := DefaultStore()
	if err := s.AddUser("bob", "secret", []string{"monitoring"}, false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, pass string
		remote           net.Addr
		want             error
		text             string
	}{
		{"guest local", "guest", "guest", tcp("127.0.0.1"), nil, ""},
		{"guest local v6", "guest", "guest", tcp("::1"), nil, ""},
		{"guest mapped v4", "guest", "guest", tcp("::ffff:127.0.0.2"), nil, ""},
		{"guest no address", "guest", "guest", nil, nil, ""},
		{"guest remote", "guest", "guest", tcp("10.1.2.3"), ErrLoopbackOnly, "user 'guest' can only connect via localhost"},
		{"guest wrong password remote", "guest", "nope", tcp("10.1.2.3"), ErrBadCredentials, "user 'guest' - invalid credentials"},
		{"bob remote", "bob", "secret", tcp("10.1.2.3"), nil, ""},
		{"bob wrong", "bob", "Secret", tcp("127.0.0.1"), ErrBadCredentials, "user 'bob' - invalid credentials"},
		{"unknown user", "eve", "x", tcp("127.0.0.1"), ErrBadCredentials, "user 'eve' - invalid credentials"},
		{"blank password", "bob", "", tcp("127.0.0.1"), ErrBadCredentials, "user 'bob' attempted to log in with a blank password, which is prohibited by the internal authN backend. To use TLS/x509 certificate-based authentication, see the rabbitmq_auth_mechanism_ssl plugin and configure the client to use the EXTERNAL authentication mechanism. Alternatively change the password for the user to be non-blank."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := s.Authenticate(tc.user, tc.pass, tc.remote)
			if tc.want == nil {
				if err != nil || u == nil || u.Name != tc.user {
					t.Fatalf("Authenticate = %v, %v", u, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || err.Error() != tc.text {
				t.Fatalf("Authenticate error %q (%v), want %q (%v)", err, err, tc.text, tc.want)
			}
		})
	}
	if _, err := s.AuthenticateExternal("bob", tcp("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateExternal("eve", tcp("10.0.0.1")); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
}

func TestPermissions(t *testing.T) {
	s := DefaultStore()
	if err := s.AddUser("u", "p", nil, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPermission("u", "/", Permission{Configure: "^u-.*", Write: "", Read: "logs|u-"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPermission("nobody", "/", Permission{}); !errors.Is(err, ErrNoUser) {
		t.Fatalf("SetPermission for a missing user: %v", err)
	}
	if err := s.SetPermission("u", "/", Permission{Configure: "("}); err == nil {
		t.Fatal("a bad regexp was accepted")
	}
	tests := []struct {
		user, vhost string
		kind        Access
		rk, name    string
		ok          bool
	}{
		{"guest", "/", Configure, "queue", "anything", true},
		{"guest", "/", Write, "exchange", "", true},
		{"guest", "other", Read, "queue", "q", false},
		{"u", "/", Configure, "queue", "u-1", true},
		{"u", "/", Configure, "queue", "x-u-1", false},   // anchored by the user
		{"u", "/", Write, "queue", "u-1", false},         // "" matches nothing
		{"u", "/", Write, "queue", "", true},             // RabbitMQ turns "" into "^$", which matches the empty name
		{"u", "/", Read, "exchange", "app.logs.1", true}, // unanchored: matches anywhere
		{"u", "/", Read, "exchange", "", false},          // default exchange is amq.default
	}
	for _, tc := range tests {
		err := s.Check(tc.user, tc.vhost, tc.kind, tc.rk, tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%s, %s, %v, %s %q) = %v, want ok=%v", tc.user, tc.vhost, tc.kind, tc.rk, tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrAccessRefused) {
			t.Errorf("Check error %v does not wrap ErrAccessRefused", err)
		}
	}
	err := s.Check("u", "/", Write, "queue", "q")
	if err == nil || err.Error() != "access to queue 'q' in vhost '/' refused for user 'u'" {
		t.Fatalf("Check text = %v", err)
	}
	err = s.Check("u", "/", Read, "exchange", "")
	if err == nil || err.Error() != "access to exchange 'amq.default' in vhost '/' refused for user 'u'" {
		t.Fatalf("Check text for the default exchange = %v", err)
	}
	if !s.CanAccessVHost("u", "/") || s.CanAccessVHost("u", "other") || s.CanAccessVHost("ghost", "/") {
		t.Fatal("CanAccessVHost wrong")
	}
	if got := VHostRefused("u", "other"); got != "access to vhost 'other' refused for user 'u'" {
		t.Fatal(got)
	}
	s.ClearPermission("u", "/")
	if s.CanAccessVHost("u", "/") {
		t.Fatal("ClearPermission did not clear")
	}
	if err := s.DeleteUser("u"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.User("u"); ok {
		t.Fatal("deleted user still there")
	}
	if err := s.DeleteUser("u"); !errors.Is(err, ErrNoUser) {
		t.Fatal(err)
	}
	if got := s.Users(); len(got) != 1 || got[0] != "guest" {
		t.Fatalf("Users = %v", got)
	}
	if p, ok := s.Permission("guest", "/"); !ok || p.Configure != ".*" {
		t.Fatalf("guest's permission %+v", p)
	}
}

func TestParsePlain(t *testing.T) {
	tests := []struct {
		in         string
		user, pass string
		err        string
	}{
		{"\x00guest\x00guest", "guest", "guest", ""},
		{"\x00\x00", "", "", ""},
		{"\x00user\x00", "user", "", ""},
		{"\x00u\x00p w d", "u", "p w d", ""},
		{"authz\x00u\x00p", "", "", `response <<97,117,116,104,122,0,117,0,112>> invalid`},
		{"\x00u", "", "", "response <<0,117>> invalid"},
		{"\x00u\x00p\x00", "", "", "response <<0,117,0,112,0>> invalid"},
		{"", "", "", `response <<"">> invalid`},
	}
	for _, tc := range tests {
		u, p, err := ParsePlain([]byte(tc.in))
		if tc.err != "" {
			if err == nil || err.Error() != tc.err || !errors.Is(err, ErrBadResponse) {
				t.Errorf("ParsePlain(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || u != tc.user || p != tc.pass {
			t.Errorf("ParsePlain(%q) = %q, %q, %v", tc.in, u, p, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want bool
	}{
		{tcp("127.0.0.1"), true},
		{tcp("127.5.6.7"), true},
		{tcp("::1"), true},
		{tcp("::ffff:127.0.0.1"), true},
		{tcp("192.168.1.1"), false},
		{tcp("::"), false},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, true},
		{&net.UDPAddr{IP: net.ParseIP("127.0.0.1")}, true},
		{nil, false},
	}
	for _, tc := range tests {
		if got := IsLoopback(tc.addr); got != tc.want {
			t.Errorf("IsLoopback(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func TestStoreConcurrentUse(t *testing.T) {
	s := DefaultStore()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				name := string(rune('a'+i)) + string(rune('a'+j%26))
				_ = s.AddUser(name, "pw", nil, false)
				_ = s.SetPermission(name, "/", Permission{Read: ".*"})
				_, _ = s.Authenticate(name, "pw", nil)
				_ = s.Check(name, "/", Read, "queue", "q")
			}
		}()
	}
	wg.Wait()
}

func BenchmarkCheck(b *testing.B) {
	s := DefaultStore()
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Check("guest", "/", Write, "exchange", "amq.topic")
	}
}

// TestPermissionMatchAll: the ".*" shortcut (compiledPerm.all) answers as the regexp does for
// every name, and a permission set again without it is checked by its regexp.
func TestPermissionMatchAll(t *testing.T) {
	s := NewStore()
	if err := s.AddUser("u", "p", nil, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPermission("u", "/", Permission{Configure: ".*", Write: ".*", Read: "^$"}); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(".*")
	for _, name := range []string{"", "amq.topic", "a\nb", "\n", "ü.ß"} {
		if !re.MatchString(name) {
			t.Fatalf("the regexp .* does not match %q: the shortcut would differ", name)
		}
		if err := s.Check("u", "/", Write, "exchange", name); err != nil {
			t.Errorf("write %q refused under .*: %v", name, err)
		}
		if err := s.Check("u", "/", Read, "queue", name+"x"); err == nil {
			t.Errorf("read %q allowed under ^$", name+"x")
		}
	}
	if err := s.SetPermission("u", "/", Permission{Write: "^logs$"}); err != nil {
		t.Fatal(err)
	}
	if s.Check("u", "/", Write, "exchange", "amq.topic") == nil || s.Check("u", "/", Write, "exchange", "logs") != nil {
		t.Fatal("a permission changed from .* is not checked by its new expression")
	}
}
