package keys

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"testing"
)

// The golden table pins the on-disk layout: a failure here means the data
// directory format changed and FORMAT's version must change with it.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
		hex  string
		str  string
	}{
		{"log", LogEntry(7, 42), "01" + "0000000000000007" + "000000000000002a", "log/7/42"},
		{"log max", LogEntry(math.MaxUint64, math.MaxUint64), "01" + "ffffffffffffffff" + "ffffffffffffffff", "log/18446744073709551615/18446744073709551615"},
		{"hardstate", HardState(1), "02" + "0000000000000001", "hardstate/1"},
		{"snapmeta", SnapshotMeta(0x0102030405060708), "03" + "0102030405060708", "snapmeta/72623859790382856"},
		{"applied", Applied(0), "04" + "0000000000000000", "applied/0"},
		{"smsnap", StateMachineSnapshot(256), "05" + "0000000000000100", "smsnap/256"},
		{"truncated", Truncated(9), "06" + "0000000000000009", "truncated/9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hex.EncodeToString(tc.key); got != tc.hex {
				t.Errorf("key = %s, want %s", got, tc.hex)
			}
			if got := String(tc.key); got != tc.str {
				t.Errorf("String = %q, want %q", got, tc.str)
			}
		})
	}
}

func TestAppendLogEntryReusesBuffer(t *testing.T) {
	buf := make([]byte, 0, 64)
	k := AppendLogEntry(buf, 3, 4)
	if &k[0] != &buf[:1][0] {
		t.Fatal("AppendLogEntry allocated despite enough capacity")
	}
	if !bytes.Equal(k, LogEntry(3, 4)) {
		t.Fatalf("AppendLogEntry = %x, LogEntry = %x", k, LogEntry(3, 4))
	}
	if n := testing.AllocsPerRun(100, func() { buf = AppendLogEntry(buf[:0], 1, 2) }); n != 0 {
		t.Fatalf("AppendLogEntry allocates %v times per call", n)
	}
}

func TestRanges(t *testing.T) {
	lo, hi := LogRange(5, 10, 20)
	if !bytes.Equal(lo, LogEntry(5, 10)) || !bytes.Equal(hi, LogEntry(5, 20)) {
		t.Fatalf("LogRange = %x %x", lo, hi)
	}
	for _, g := range []uint64{0, 1, 1 << 40, math.MaxUint64} {
		lo, hi := LogPrefixRange(g)
		in := func(k []byte) bool { return bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 }
		for _, i := range []uint64{0, 1, math.MaxUint64} {
			if !in(LogEntry(g, i)) {
				t.Errorf("group %d: LogPrefixRange misses index %d", g, i)
			}
		}
		if g > 0 && in(LogEntry(g-1, math.MaxUint64)) {
			t.Errorf("group %d: LogPrefixRange covers the previous group", g)
		}
		if g < math.MaxUint64 && in(LogEntry(g+1, 0)) {
			t.Errorf("group %d: LogPrefixRange covers the next group", g)
		}
		for _, k := range GroupKeys(g) {
			if in(k) {
				t.Errorf("group %d: LogPrefixRange covers %s", g, String(k))
			}
		}
	}
}

// Byte order must be numeric order so a range scan or DeleteRange over
// indexes is a contiguous key span.
func TestOrder(t *testing.T) {
	vals := []uint64{0, 1, 255, 256, 1 << 32, math.MaxUint64 - 1, math.MaxUint64}
	for _, g1 := range vals {
		for _, g2 := range vals {
			for _, i1 := range vals {
				for _, i2 := range vals {
					c := bytes.Compare(LogEntry(g1, i1), LogEntry(g2, i2))
					want := cmp2(g1, g2)
					if want == 0 {
						want = cmp2(i1, i2)
					}
					if c != want {
						t.Fatalf("Compare(log/%d/%d, log/%d/%d) = %d, want %d", g1, i1, g2, i2, c, want)
					}
				}
			}
		}
	}
}

func cmp2(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestParse(t *testing.T) {
	g, i, err := ParseLogEntry(LogEntry(11, 12))
	if err != nil || g != 11 || i != 12 {
		t.Fatalf("ParseLogEntry = %d %d %v", g, i, err)
	}
	for _, k := range GroupKeys(13) {
		tb, g, err := ParseGroupKey(k)
		if err != nil || g != 13 || Table(k[0]) != tb {
			t.Fatalf("ParseGroupKey(%x) = %v %d %v", k, tb, g, err)
		}
	}
	for _, bad := range [][]byte{nil, {}, {0x01}, LogEntry(1, 2)[:16], HardState(1)[:8], {0x08, 0, 0, 0, 0, 0, 0, 0, 1}, append(HardState(1), 0)} {
		if _, _, _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%x) error = %v, want ErrMalformed", bad, err)
		}
	}
	if tb, id, _, err := Parse(Node(NodeMembers)); err != nil || tb != TableNode || id != NodeMembers {
		t.Errorf("Parse(node record key) = %v %d %v", tb, id, err)
	}
	if _, _, err := ParseLogEntry(HardState(1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseLogEntry(hard state key) error = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(LogEntry(1, 2))
	f.Add(HardState(3))
	f.Add(Truncated(math.MaxUint64))
	f.Add([]byte{0x09})
	f.Fuzz(func(t *testing.T, k []byte) {
		tb, g, i, err := Parse(k)
		if err != nil {
			return
		}
		// Whatever parses must rebuild to the same bytes.
		var again []byte
		if tb == TableLogEntry {
			again = LogEntry(g, i)
		} else {
			again = append([]byte{byte(tb)}, k[1:]...)
			if _, g2, err := ParseGroupKey(again); err != nil || g2 != g {
				t.Fatalf("reparse %x: %d %v", again, g2, err)
			}
		}
		if !bytes.Equal(again, k) {
			t.Fatalf("Parse(%x) = %v %d %d, rebuilds to %x", k, tb, g, i, again)
		}
	})
}
