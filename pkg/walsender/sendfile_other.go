//go:build !linux

package walsender

import (
	"errors"
	"net"
	"os"
)

// fileSender is Linux-only; elsewhere WAL is read into the frame buffer.
type fileSender struct{}

var errNoSendfile = errors.New("sendfile not supported")

func newFileSender(net.Conn) *fileSender { return nil }

func (*fileSender) send([]byte, *os.File, int64, int) (int, error) { return 0, errNoSendfile }
