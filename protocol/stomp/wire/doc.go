// Package wire is Parley's STOMP 1.0-1.2 frame codec: a bounded frame reader (every line,
// header count and body is checked against Limits before it is buffered, so a hostile client
// cannot make the server allocate more than the limits) and an appender that encodes frames
// into a caller's buffer with the header escaping of the negotiated version.
//
// Frames are go-stomp's types (github.com/go-stomp/stomp/v3/frame): the session code and the
// go-stomp client used in tests then speak of the same Frame and Header. go-stomp's own reader
// is not used: it has no limits on header size, header count or body size, and it does not
// tell a lying content-length apart from other failures.
//
// Spec references are to https://stomp.github.io/stomp-specification-1.2.html ("STOMP 1.2
// §Augmented BNF", "§Value Encoding", "§Heart-beating").
package wire
