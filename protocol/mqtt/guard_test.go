package mqtt

import "testing"

// The MQTT 5 SUBSCRIBE shapes mochi's decoder mis-handles are refused before it sees them.
func TestWellFormedSubscribe5(t *testing.T) {
	for _, c := range []struct {
		name string
		body []byte
		want bool
	}{
		{"one filter", []byte{0, 1, 0, 0, 1, 'a', 1}, true},
		{"two filters", []byte{0, 1, 0, 0, 1, 'a', 1, 0, 1, 'b', 2}, true},
		{"with properties", []byte{0, 1, 2, 11, 5, 0, 1, 'a', 0}, true},
		{"options byte missing (mochi indexes past the end)", []byte{0, 1, 0, 0, 1, 'a'}, false},
		{"filter cut short", []byte{0, 1, 0, 0, 5, 'a'}, false},
		{"properties longer than the packet", []byte{0, 1, 9, 11}, false},
		{"no packet id", []byte{0}, false},
	} {
		if got := wellFormedSubscribe5(c.body); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
