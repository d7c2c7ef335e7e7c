package feedback_test

import (
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
)

var (
	sinkStandby    feedback.StandbyStatus
	sinkHot        feedback.HotStandby
	sinkPageserver feedback.Pageserver
	sinkKind       feedback.Kind
	sinkBytes      []byte
)

func BenchmarkParseStandbyStatus(b *testing.B) {
	msg := feedback.AppendStandbyStatus(nil, feedback.StandbyStatus{Write: 0x900000, Flush: 0x900000, SendTime: 1, ReplyRequested: true})
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s, err := feedback.ParseStandbyStatus(msg)
		if err != nil {
			b.Fatal(err)
		}
		sinkStandby = s
	}
}

func BenchmarkParseHotStandby(b *testing.B) {
	msg := feedback.AppendHotStandby(nil, feedback.HotStandby{SendTime: 1, Xmin: 1000, XminEpoch: 1, CatalogXmin: 999})
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		h, err := feedback.ParseHotStandby(msg)
		if err != nil {
			b.Fatal(err)
		}
		sinkHot = h
	}
}

func BenchmarkParsePageserver(b *testing.B) {
	msg := feedback.AppendPageserver(nil, feedback.Pageserver{
		CurrentTimelineSize: 1 << 30, LastReceivedLSN: 0x1_0000_0000, DiskConsistentLSN: 0xFFFF_0000,
		RemoteConsistentLSN: 0xFF00_0000, ReplyTime: 800000000000000, ShardNumber: 2, CorruptionDetected: false,
	})
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		p, err := feedback.ParsePageserver(msg)
		if err != nil {
			b.Fatal(err)
		}
		sinkPageserver = p
	}
}

func BenchmarkClassify(b *testing.B) {
	msg := feedback.AppendStandbyStatus(nil, feedback.StandbyStatus{})
	b.ReportAllocs()
	for b.Loop() {
		k, err := feedback.Classify(msg)
		if err != nil {
			b.Fatal(err)
		}
		sinkKind = k
	}
}

func BenchmarkAppendPageserver(b *testing.B) {
	buf := make([]byte, 0, 256)
	p := feedback.Pageserver{LastReceivedLSN: 1, ShardNumber: 1}
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes = feedback.AppendPageserver(buf[:0], p)
	}
}
