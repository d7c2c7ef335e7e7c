//go:build !linux

package walsender

import (
	"errors"
	"net"
	"os"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// fileSender is Linux-only; elsewhere WAL is read into the frame buffer.
type fileSender struct{}

var (
	errNoSendfile = errors.New("sendfile not supported")
	errMapFault   = errors.New("mapped WAL not readable")
)

func newFileSender(net.Conn) *fileSender { return nil }

func (*fileSender) send([]byte, *os.File, int64, int) (int, error) { return 0, errNoSendfile }

func (*fileSender) sendMem([]byte, walreader.Lender, uint32, wal.LSN, int) (int, int, error) {
	return 0, 0, errNoSendfile
}

func (*fileSender) sendMapped([]byte, []byte) (int, int, error) { return 0, 0, errNoSendfile }

func (*fileSender) writeAll([]byte) error { return errNoSendfile }

func (*fileSender) readCached(f *os.File, b []byte, off int64) (int, error) { return f.ReadAt(b, off) }
