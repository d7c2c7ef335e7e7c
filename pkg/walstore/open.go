package walstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Opened is a timeline directory after Open: its control data and, for a
// timeline that holds WAL, a writer positioned at the true end of WAL, with
// what the open sequence found and repaired.
type Opened struct {
	Dir     Dir
	Control Control
	Writer  *Writer // nil until the timeline has had contact with an upstream

	Created     bool           // the directory was new
	Recovery    RecoveryResult // end-of-WAL recovery (zero for a new timeline)
	SetAside    []string       // files moved to DivergedDir (an interrupted switch completed)
	RemovedOld  []string       // files below the local start (an interrupted removal completed)
	RemovedTemp []string       // temp files of interrupted atomic writes
	// ControlNotSaved is why the recovered end could not be recorded in
	// the control file (only a full disk is tolerated).
	ControlNotSaved error
}

// Open creates or loads the timeline directory path of (tenant, timeline)
// and brings it to a consistent state:
//  1. a new directory gets a control file, and its parents are fsynced;
//  2. temp files of interrupted atomic writes are removed;
//  3. for a timeline holding WAL: the true end of valid WAL is recovered
//     (Recover), a timeline switch whose control file was committed but
//     whose file moves were not is completed, segment files below the
//     recorded local start (an interrupted removal) are removed, and a
//     writer is opened at the end, which is recorded in the control file.
func Open(path, tenant, timeline string) (*Opened, error) {
	d := Dir(path)
	o := &Opened{Dir: d}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, err
	}
	ctl, err := d.ReadControl()
	switch {
	case errors.Is(err, ErrNoControl):
		ctl = Control{TenantID: tenant, TimelineID: timeline}
		if err := d.WriteControl(ctl); err != nil {
			return nil, err
		}
		// Make the new tenant and timeline directories durable.
		if err := SyncDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
		if err := SyncDir(filepath.Dir(filepath.Dir(path))); err != nil {
			return nil, err
		}
		o.Created = true
	case err != nil:
		return nil, err
	}
	if ctl.TenantID != tenant || ctl.TimelineID != timeline {
		return nil, fmt.Errorf("timeline directory %q holds %s/%s, not %s/%s", path, ctl.TenantID, ctl.TimelineID, tenant, timeline)
	}
	if o.RemovedTemp, err = d.RemoveStaleTemps(); err != nil {
		return nil, err
	}
	if !ctl.Initialized() {
		o.Control = ctl
		return o, nil
	}
	if ctl.BackupLSN < ctl.StartLSN {
		// A control file from before the archive existed: nothing below
		// the local start can be uploaded from here.
		ctl.BackupLSN = ctl.StartLSN
	}
	if o.Recovery, err = Recover(path, ctl); err != nil {
		return nil, fmt.Errorf("recover end of WAL: %w", err)
	}
	if o.SetAside, err = d.SetAsideDiverged(ctl.TLI, d.HistoryEntries(ctl.TLI), ctl.WalSegSize); err != nil {
		return nil, fmt.Errorf("setting aside diverged WAL: %w", err)
	}
	if o.RemovedOld, err = d.RemoveSegmentsBelow(ctl.StartLSN, ctl.WalSegSize); err != nil {
		return nil, err
	}
	end := o.Recovery.End
	w, err := OpenWriter(path, ctl.TLI, ctl.WalSegSize, end)
	if err != nil {
		return nil, err
	}
	ctl.FlushLSN = end
	if err := d.WriteControl(ctl); err != nil {
		if !IsNoSpace(err) {
			w.Close()
			return nil, err
		}
		// The control file only has to trail the true end, which the
		// next Open recovers again: on a full disk, start with the old
		// one and serve what is held. WriteControl left no temp file.
		o.ControlNotSaved = err
	}
	o.Control, o.Writer = ctl, w
	return o, nil
}
