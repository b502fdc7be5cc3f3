// Package framewriter owns the write side of a protocol connection's socket, shared by the AMQP
// and STOMP adapters: anyone appends encoded frames to one buffer under a lock, and one
// goroutine per connection writes everything pending in one call, so a busy connection makes
// few large writes and an idle one flushes at once (nothing waits for company). It also keeps
// the connection's heartbeats going during write silence, measures unwritten output for
// consumer back-pressure, and in framed mode (WebSocket) writes one frame per call, since each
// write becomes one WebSocket message.
package framewriter
