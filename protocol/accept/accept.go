package accept

import (
	"errors"
	"net"
	"time"

	"go.uber.org/zap"
)

// maxBackoff bounds the pause after a failed accept.
const maxBackoff = time.Second

// Loop accepts connections on ln and calls serve for each on a new goroutine, until ln is
// closed or closed reports that the server is shutting down; then it returns nil. A failed
// accept (out of file descriptors, say) is logged and retried after a pause that doubles from
// 5 ms up to a second, so the listener recovers once descriptors are free again.
func Loop(ln net.Listener, log *zap.Logger, closed func() bool, serve func(net.Conn)) error {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || closed() {
				return nil
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), maxBackoff)
			log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go serve(nc)
	}
}
