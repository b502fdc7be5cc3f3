package meta

import "testing"

func TestRetainedSetClearAndSnapshot(t *testing.T) {
	s := New()
	if !s.SetRetained(DefaultVHost, "a/b", []byte("one")) {
		t.Fatal("first set reported no change")
	}
	if s.SetRetained(DefaultVHost, "a/b", []byte("one")) {
		t.Fatal("same message again reported a change")
	}
	s.SetRetained(DefaultVHost, "a/c", []byte("two"))
	s.SetRetained(DefaultVHost, "gone", []byte("x"))
	if !s.SetRetained(DefaultVHost, "gone", nil) {
		t.Fatal("clearing reported no change")
	}
	if s.SetRetained(DefaultVHost, "never", nil) {
		t.Fatal("clearing an absent topic reported a change")
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	r.RetainedMessages(DefaultVHost, func(topic string, msg []byte) bool {
		got[topic] = string(msg)
		return true
	})
	if len(got) != 2 || got["a/b"] != "one" || got["a/c"] != "two" {
		t.Fatalf("restored retained messages %v", got)
	}
}
