package auth

import (
	"encoding/binary"
	"errors"
	"testing"
)

func shortstr(s string) []byte { return append([]byte{byte(len(s))}, s...) }

func longstrField(name, v string) []byte {
	b := append(shortstr(name), 'S')
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func TestParseAMQPlain(t *testing.T) {
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name       string
		in         []byte
		user, pass string
		ok         bool
	}{
		{"login and password", cat(longstrField("LOGIN", "guest"), longstrField("PASSWORD", "pw")), "guest", "pw", true},
		{"reversed with extras", cat(append(shortstr("n"), 'I', 0, 0, 0, 1), longstrField("PASSWORD", ""),
			append(shortstr("v"), 'V'), longstrField("LOGIN", "u")), "u", "", true},
		{"missing password", longstrField("LOGIN", "guest"), "", "", false},
		{"truncated", longstrField("LOGIN", "guest")[:8], "", "", false},
		{"bad type", append(shortstr("LOGIN"), '?'), "", "", false},
		{"empty", nil, "", "", false},
	}
	for _, tc := range tests {
		u, p, err := ParseAMQPlain(tc.in)
		if tc.ok != (err == nil) || u != tc.user || p != tc.pass {
			t.Errorf("%s: ParseAMQPlain = %q, %q, %v", tc.name, u, p, err)
		}
		if err != nil && !errors.Is(err, ErrBadResponse) {
			t.Errorf("%s: error %v does not wrap ErrBadResponse", tc.name, err)
		}
	}
}

func FuzzParseAMQPlain(f *testing.F) {
	f.Add(append(longstrField("LOGIN", "guest"), longstrField("PASSWORD", "guest")...))
	f.Add([]byte{5, 'L', 'O', 'G', 'I', 'N', 'S', 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) { _, _, _ = ParseAMQPlain(b) })
}

func FuzzParsePlain(f *testing.F) {
	f.Add([]byte("\x00guest\x00guest"))
	f.Add([]byte("a\x00b\x00c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, p, err := ParsePlain(b)
		if err == nil && string(b) != "\x00"+u+"\x00"+p {
			t.Fatalf("ParsePlain(%q) = %q, %q", b, u, p)
		}
	})
}
