package walsender

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/pgwire"
	"github.com/pgsafekeeper/safekeeper/pkg/replcmd"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

func (c *conn) dispatch(ctx context.Context, cmd replcmd.Command) error {
	switch cmd.Kind {
	case replcmd.IdentifySystem:
		return c.identifySystem()
	case replcmd.Show:
		return c.show(cmd.Name)
	case replcmd.TimelineHistory:
		return c.timelineHistory(cmd.Timeline)
	case replcmd.StartReplication:
		return c.startReplication(ctx, cmd)
	case replcmd.ReadReplicationSlot:
		return c.readReplicationSlot(cmd.Name)
	case replcmd.CreateReplicationSlot:
		return c.createReplicationSlot(cmd)
	case replcmd.DropReplicationSlot:
		if err := c.slots.Drop(ctx, cmd.Name, c.pid, cmd.Wait); err != nil {
			if ctx.Err() != nil {
				if cerr := canceled(ctx); cerr != nil {
					return cerr
				}
				return errStreamShutdown
			}
			return err
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("DROP_REPLICATION_SLOT")})
		return nil
	case replcmd.BaseBackup:
		return pgerr.New(pgerr.FeatureNotSupported, "BASE_BACKUP is not supported by safekeeper").
			WithHint("Take base backups from the primary; safekeeper serves WAL only.")
	case replcmd.AlterReplicationSlot, replcmd.UploadManifest:
		if ctl := c.tl.Control(); ctl.ServerVersionNum < 170000 {
			// Words of PostgreSQL 17: before it they are SQL, which a
			// physical walsender refuses.
			return pgerr.New(pgerr.FeatureNotSupported, replcmd.NotReplicationCommandMessage)
		}
		return pgerr.New(pgerr.FeatureNotSupported, "command is not supported by safekeeper")
	default:
		return pgerr.New(pgerr.FeatureNotSupported, "command is not supported by safekeeper")
	}
}

func (c *conn) requireWAL() (timelineControl, error) {
	ctl := c.tl.Control()
	if !ctl.Initialized() {
		return ctl, timeline.ErrNoWAL()
	}
	return ctl, nil
}

type timelineControl = walstore.Control

func (c *conn) identifySystem() error {
	ctl, err := c.requireWAL()
	if err != nil {
		return err
	}
	tliCol := pgwire.Int8Col("timeline")
	if speaksPG15(ctl) {
		tliCol = pgwire.Int4Col("timeline")
	}
	c.be.Send(pgwire.RowDescription(pgwire.TextCol("systemid"), tliCol, pgwire.TextCol("xlogpos"), pgwire.TextCol("dbname")))
	c.be.Send(pgwire.DataRow(
		pgwire.Uint(ctl.SystemID),
		pgwire.Uint(uint64(ctl.TLI)),
		pgwire.Text(c.tl.FlushLSN().String()),
		nil))
	c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("IDENTIFY_SYSTEM")})
	return nil
}

func (c *conn) show(name string) error {
	if strings.EqualFold(name, "all") {
		return c.showAll()
	}
	st, ok := lookupSetting(name)
	if !ok {
		return pgerr.New(pgerr.UndefinedObject, "unrecognized configuration parameter \"%s\"", name)
	}
	val, err := c.settingValue(st.name)
	if err != nil {
		return err
	}
	// The column is named as the setting is spelled (SHOW timezone:
	// "TimeZone"), as PostgreSQL names it.
	c.be.Send(pgwire.RowDescription(pgwire.TextCol(st.name)))
	c.be.Send(pgwire.DataRow(pgwire.Text(val)))
	c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SHOW")})
	return nil
}

// showAll answers SHOW ALL as PostgreSQL does: name, setting and
// description of every setting a replication connection can SHOW, by
// name, without those PostgreSQL leaves out of SHOW ALL. A setting without
// a value yet (wal_segment_size before any WAL) is left out.
func (c *conn) showAll() error {
	c.be.Send(pgwire.RowDescription(pgwire.TextCol("name"), pgwire.TextCol("setting"), pgwire.TextCol("description")))
	for _, st := range showSettings {
		if st.notInAll {
			continue
		}
		val, err := c.settingValue(st.name)
		if err != nil {
			continue
		}
		c.be.Send(pgwire.DataRow(pgwire.Text(st.name), pgwire.Text(val), pgwire.Text(st.desc)))
	}
	c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SHOW")})
	return nil
}

// settingValue returns the value SHOW gives for the setting spelled name
// (as in showSettings).
func (c *conn) settingValue(name string) (string, error) {
	ctl := c.tl.Control()
	switch name {
	case "wal_segment_size":
		if !ctl.Initialized() {
			return "", timeline.ErrNoWAL()
		}
		return wal.FormatSegmentSize(ctl.WalSegSize), nil
	case "data_directory_mode":
		return "0700", nil
	case "server_version_num":
		if ctl.ServerVersionNum > 0 {
			return strconv.Itoa(ctl.ServerVersionNum), nil
		}
		return "150000", nil
	case "wal_level":
		if v := c.tl.WalLevel(); v != "" {
			return v, nil
		}
		return "replica", nil
	case "wal_block_size":
		return strconv.Itoa(wal.BlockSize), nil
	case "wal_sender_timeout":
		return formatMillisSetting(c.walSenderTimeout), nil
	}
	// The settings announced at startup.
	for _, kv := range c.parameterStatus() {
		if kv[0] == name {
			return kv[1], nil
		}
	}
	return "", pgerr.Internal(fmt.Errorf("setting %q has no value", name))
}

func (c *conn) timelineHistory(tli uint32) error {
	ctl, err := c.requireWAL()
	if err != nil {
		return err
	}
	typmod := int32(-1)
	if speaksPG15(ctl) {
		typmod = 0 // PostgreSQL 15 hand-builds this RowDescription with typmod 0
	}
	// PostgreSQL sends the RowDescription before it opens the file.
	c.be.Send(pgwire.RowDescription(
		pgwire.Column{Name: "filename", OID: pgwire.OIDText, Typmod: typmod},
		pgwire.Column{Name: "content", OID: pgwire.OIDText, Typmod: typmod}))
	name := wal.HistoryFileName(tli)
	content, err := c.tl.History(tli)
	if errors.Is(err, os.ErrNotExist) {
		return pgerr.New(pgerr.UndefinedFile, "could not open file \"pg_wal/%s\": No such file or directory", name)
	}
	if err != nil {
		return pgerr.New(pgerr.InternalError, "could not read file \"pg_wal/%s\": %v", name, err)
	}
	c.be.Send(pgwire.DataRow(pgwire.Text(name), content))
	c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("TIMELINE_HISTORY")})
	return nil
}

// historyContains finds tli in the current timeline's history: the LSN
// where it ended and the timeline that followed (0, 0 for the current one).
func (c *conn) historyContains(ctl timelineControl, tli uint32) (switchpoint wal.LSN, next uint32, ok bool) {
	if tli == ctl.TLI {
		return 0, 0, true
	}
	if tli > ctl.TLI {
		return 0, 0, false
	}
	return wal.SwitchPoint(c.tl.HistoryEntries(), tli)
}

func (c *conn) readReplicationSlot(name string) error {
	c.be.Send(pgwire.RowDescription(pgwire.TextCol("slot_type"), pgwire.TextCol("restart_lsn"), pgwire.Int8Col("restart_tli")))
	slot, ok := c.slots.Read(name)
	switch {
	case !ok:
		c.be.Send(pgwire.DataRow(nil, nil, nil))
	case slot.RestartLSN == 0:
		c.be.Send(pgwire.DataRow(pgwire.Text("physical"), nil, nil))
	default:
		hist := c.tl.HistoryEntries()
		tli, ok := wal.TLIOfPoint(hist, slot.RestartLSN)
		if !ok {
			tli = hist[len(hist)-1].TLI
		}
		c.be.Send(pgwire.DataRow(pgwire.Text("physical"), pgwire.Text(slot.RestartLSN.String()), pgwire.Uint(uint64(tli))))
	}
	c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("READ_REPLICATION_SLOT")})
	return nil
}

func (c *conn) createReplicationSlot(cmd replcmd.Command) error {
	if cmd.Logical {
		return c.noLogicalDecoding()
	}
	if cmd.ReserveWAL {
		if _, err := c.requireWAL(); err != nil {
			return err
		}
	}
	if err := c.slots.Create(cmd.Name, cmd.Temporary, cmd.ReserveWAL, c.pid); err != nil {
		return err
	}
	if cmd.Temporary {
		c.tempSlots = true
	}
	c.be.Send(pgwire.RowDescription(pgwire.TextCol("slot_name"), pgwire.TextCol("consistent_point"),
		pgwire.TextCol("snapshot_name"), pgwire.TextCol("output_plugin")))
	c.be.Send(pgwire.DataRow(pgwire.Text(cmd.Name), pgwire.Text("0/0"), nil, nil))
	c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("CREATE_REPLICATION_SLOT")})
	return nil
}

// speaksPG15 reports whether result sets follow PostgreSQL 15's column
// types (IDENTIFY_SYSTEM timeline int4, TIMELINE_HISTORY typmod 0) because
// the upstream, whose version is reported to clients, is 15 or older.
func speaksPG15(ctl timelineControl) bool {
	return ctl.ServerVersionNum > 0 && ctl.ServerVersionNum < 160000
}

// noLogicalDecoding is PostgreSQL's answer to a logical slot command on a
// physical replication connection. It checks wal_level before the database
// connection (CheckLogicalDecodingRequirements); the WAL served here is the
// upstream's, so its wal_level is the one that counts ("replica",
// PostgreSQL's default, while unknown).
func (c *conn) noLogicalDecoding() error {
	if c.tl.WalLevel() != "logical" {
		return pgerr.New(pgerr.ObjectNotInPrerequisiteState, "logical decoding requires wal_level >= logical")
	}
	return pgerr.New(pgerr.ObjectNotInPrerequisiteState, "logical decoding requires a database connection")
}
