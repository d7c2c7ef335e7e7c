package replcmd

import (
	"strconv"
	"strings"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// Parse parses one replication command. See the package documentation for
// the grammar and the errors. The command's Notices are set also when
// Parse fails: PostgreSQL sends them before the error.
func Parse(q string) (Command, error) {
	p := parser{lx: lexer{s: q}}
	cmd, err := p.parse()
	cmd.Notices = p.lx.notices
	return cmd, err
}

func (p *parser) parse() (Command, error) {
	first, lerr := p.lx.next()
	if lerr == errUnterminatedIdent || lerr == errUnterminatedString {
		// PostgreSQL scans the first token to decide whether the query
		// is a replication command, and its scanner fails on an
		// unterminated quote there too.
		return Command{}, lexError(lerr)
	}
	if lerr != errNone || first.kind != tKeyword || first.kw.command() == 0 {
		return Command{}, errNotReplication()
	}
	p.cmd.Kind = first.kw.command()
	var err error
	switch p.cmd.Kind {
	case IdentifySystem:
		err = p.end()
	case Show, ReadReplicationSlot:
		if p.cmd.Name, err = p.varName(); err == nil {
			err = p.end()
		}
	case TimelineHistory:
		err = p.timelineHistory()
	case StartReplication:
		err = p.startReplication()
	case CreateReplicationSlot:
		err = p.createSlot()
	case DropReplicationSlot:
		err = p.dropSlot()
	case BaseBackup, AlterReplicationSlot, UploadManifest:
		// Recognised so the caller can reject them; the rest is not parsed.
	}
	if err != nil {
		return Command{}, err
	}
	return p.cmd, nil
}

type parser struct {
	lx  lexer
	cmd Command
}

// next returns the next token, turning a lexical error into an error value.
func (p *parser) next() (token, error) {
	t, e := p.lx.next()
	if e != errNone {
		return t, lexError(e)
	}
	return t, nil
}

// end accepts the end of the query, with one optional ';'.
func (p *parser) end() error {
	t, err := p.next()
	if err != nil {
		return err
	}
	return p.endFrom(t)
}

// endFrom is end where t is the already-read next token.
func (p *parser) endFrom(t token) error {
	var err error
	if t.kind == tChar && t.ch == ';' {
		if t, err = p.next(); err != nil {
			return err
		}
	}
	if t.kind != tEOF {
		return syntaxError()
	}
	return nil
}

// ident reads one identifier.
func (p *parser) ident() (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	if t.kind != tIdent {
		return "", syntaxError()
	}
	return t.str, nil
}

// varName reads ident ('.' ident)* and joins the parts with '.'. When the
// parts are plain lower-case identifiers written without spaces, the result
// is a substring of the query.
func (p *parser) varName() (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	if t.kind != tIdent {
		return "", syntaxError()
	}
	name, start, end := t.str, t.start, t.end
	contiguous := t.raw // query[start:end] is the joined name so far
	building := false   // b holds the joined name so far
	var b strings.Builder
	for {
		save := p.lx.mark()
		dot, err := p.next()
		if err != nil {
			return "", err
		}
		if dot.kind != tChar || dot.ch != '.' {
			p.lx.reset(save) // read again by the caller: one notice
			break
		}
		part, err := p.next()
		if err != nil {
			return "", err
		}
		if part.kind != tIdent {
			return "", syntaxError()
		}
		if !building {
			if contiguous && part.raw && dot.start == end && part.start == dot.end {
				end = part.end
				continue
			}
			building = true
			if contiguous {
				b.WriteString(p.lx.s[start:end])
			} else {
				b.WriteString(name)
			}
		}
		b.WriteByte('.')
		b.WriteString(part.str)
	}
	switch {
	case building:
		return b.String(), nil
	case contiguous:
		return p.lx.s[start:end], nil
	}
	return name, nil
}

func (p *parser) timelineHistory() error {
	t, err := p.next()
	if err != nil {
		return err
	}
	if t.kind != tUConst {
		return syntaxError()
	}
	if t.num == 0 {
		return invalidTimeline(t.num)
	}
	p.cmd.Timeline, p.cmd.HasTimeline = uint32(t.num), true
	return p.end()
}

func (p *parser) startReplication() error {
	t, err := p.next()
	if err != nil {
		return err
	}
	hasSlot := false
	if t.kind == tKeyword && t.kw == kwSlot {
		if p.cmd.Slot, err = p.ident(); err != nil {
			return err
		}
		hasSlot = true
		if t, err = p.next(); err != nil {
			return err
		}
		if t.kind == tKeyword && t.kw == kwLogical {
			p.cmd.Logical = true
			if t, err = p.next(); err != nil {
				return err
			}
			if t.kind != tRecPtr {
				return syntaxError()
			}
			p.cmd.LSN = t.num
			// The plugin's options are the plugin's to check; the
			// grammar is PostgreSQL's: ( name ['value'] [, ...] ).
			if t, err = p.next(); err != nil {
				return err
			}
			if t.kind == tChar && t.ch == '(' {
				if err = p.pluginOptions(); err != nil {
					return err
				}
				if t, err = p.next(); err != nil {
					return err
				}
			}
			// No slotExists: PostgreSQL checks wal_level before it
			// looks for the slot.
			return p.endFrom(t)
		}
	}
	if t.kind == tKeyword && t.kw == kwPhysical {
		if t, err = p.next(); err != nil {
			return err
		}
	}
	if t.kind != tRecPtr {
		return syntaxError()
	}
	p.cmd.LSN = t.num
	if t, err = p.next(); err != nil {
		return err
	}
	if t.kind == tKeyword && t.kw == kwTimeline {
		if t, err = p.next(); err != nil {
			return err
		}
		if t.kind != tUConst {
			return syntaxError()
		}
		if t.num == 0 {
			return invalidTimeline(t.num)
		}
		p.cmd.Timeline, p.cmd.HasTimeline = uint32(t.num), true
		if t, err = p.next(); err != nil {
			return err
		}
	}
	if err = p.endFrom(t); err != nil {
		return err
	}
	if hasSlot {
		return slotExists(p.cmd.Slot)
	}
	return nil
}

// slotExists rejects the empty slot name, which Command cannot tell apart
// from "no slot" and which no slot can have.
func slotExists(name string) error {
	if name == "" {
		return pgerr.New(pgerr.UndefinedObject, "replication slot \"%s\" does not exist", name)
	}
	return nil
}

func (p *parser) dropSlot() error {
	var err error
	if p.cmd.Name, err = p.ident(); err != nil {
		return err
	}
	t, err := p.next()
	if err != nil {
		return err
	}
	if t.kind == tKeyword && t.kw == kwWait {
		p.cmd.Wait = true
		if t, err = p.next(); err != nil {
			return err
		}
	}
	return p.endFrom(t)
}

func (p *parser) createSlot() error {
	var err error
	if p.cmd.Name, err = p.ident(); err != nil {
		return err
	}
	t, err := p.next()
	if err != nil {
		return err
	}
	if t.kind == tKeyword && t.kw == kwTemporary {
		p.cmd.Temporary = true
		if t, err = p.next(); err != nil {
			return err
		}
	}
	if t.kind != tKeyword {
		return syntaxError()
	}
	var opts slotOptions
	switch t.kw {
	case kwLogical:
		p.cmd.Logical, opts.logical = true, true
		// The output plugin's name.
		if t, err = p.next(); err != nil {
			return err
		}
		if t.kind != tIdent {
			return syntaxError()
		}
	case kwPhysical:
	default:
		return syntaxError()
	}

	if t, err = p.next(); err != nil {
		return err
	}
	if t.kind == tChar && t.ch == '(' {
		if err = p.optionList(&opts); err != nil {
			return err
		}
		if err = p.end(); err != nil {
			return err
		}
	} else {
		for t.kind == tKeyword {
			name := legacyOption(t.kw)
			if name == "" {
				break
			}
			opts.apply(name, legacyValue(t.kw))
			if t, err = p.next(); err != nil {
				return err
			}
		}
		if err = p.endFrom(t); err != nil {
			return err
		}
	}
	if opts.err != nil {
		return opts.err
	}
	p.cmd.ReserveWAL = opts.reserveWAL
	return nil
}

// legacyOption maps a legacy CREATE_REPLICATION_SLOT option keyword to the
// option it stands for, or "".
func legacyOption(k keyword) string {
	switch k {
	case kwReserveWAL:
		return "reserve_wal"
	case kwTwoPhase:
		return "two_phase"
	case kwExportSnapshot, kwNoexportSnapshot, kwUseSnapshot:
		return "snapshot"
	}
	return ""
}

// legacyValue is the value a legacy CREATE_REPLICATION_SLOT keyword gives
// its option: none (true) for a boolean, the snapshot action for a
// snapshot keyword.
func legacyValue(k keyword) token {
	switch k {
	case kwExportSnapshot:
		return token{kind: tIdent, str: "export"}
	case kwNoexportSnapshot:
		return token{kind: tIdent, str: "nothing"}
	case kwUseSnapshot:
		return token{kind: tIdent, str: "use"}
	}
	return token{}
}

// pluginOptions parses a logical START_REPLICATION's output plugin
// options after the '(': name ['value'] [, name ['value']]* ')', where a
// name is an identifier (not a keyword) and a value a string.
func (p *parser) pluginOptions() error {
	for {
		t, err := p.next()
		if err != nil {
			return err
		}
		if t.kind != tIdent {
			return syntaxError()
		}
		if t, err = p.next(); err != nil {
			return err
		}
		if t.kind == tSConst {
			if t, err = p.next(); err != nil {
				return err
			}
		}
		if more, err := listNext(t); !more || err != nil {
			return err
		}
	}
}

// listNext reads the token after a list element: true after ',' (another
// element follows), false after ')' (the list ended), else a syntax error.
func listNext(t token) (bool, error) {
	if t.kind == tChar {
		switch t.ch {
		case ',':
			return true, nil
		case ')':
			return false, nil
		}
	}
	return false, syntaxError()
}

// optionList parses option [, option]* ')' after the '('.
func (p *parser) optionList(opts *slotOptions) error {
	for {
		t, err := p.next()
		if err != nil {
			return err
		}
		var name string
		switch t.kind {
		case tIdent:
			name = t.str
		case tKeyword:
			name = t.kw.name()
		default:
			return syntaxError()
		}
		if t, err = p.next(); err != nil {
			return err
		}
		var arg token
		switch t.kind {
		case tIdent, tSConst, tUConst:
			arg = t
			if t, err = p.next(); err != nil {
				return err
			}
		}
		opts.apply(name, arg)
		if more, err := listNext(t); !more || err != nil {
			return err
		}
	}
}

// slotOptions accumulates slot options. Like PostgreSQL it checks them in
// order after parsing, so the first bad option is reported, and only if
// the whole command parsed. reserve_wal belongs to physical slots;
// snapshot, two_phase and failover (PostgreSQL 17) to logical ones.
type slotOptions struct {
	logical bool
	given   uint8 // bit i: slotOptionNames[i] was given
	// reserveWAL is reserve_wal's value.
	reserveWAL bool
	err        error
}

var slotOptionNames = [...]string{"reserve_wal", "snapshot", "two_phase", "failover"}

// apply records option name with argument arg (arg.kind == tEOF: none).
func (o *slotOptions) apply(name string, arg token) {
	if o.err != nil {
		return
	}
	bit := uint8(0)
	for i, n := range slotOptionNames {
		if n == name {
			bit = 1 << i
		}
	}
	if bit == 0 {
		o.err = pgerr.New(pgerr.InternalError, "unrecognized option: %s", name)
		return
	}
	forLogical := name != "reserve_wal"
	if o.given&bit != 0 || forLogical != o.logical {
		o.err = errSyntaxMsg("conflicting or redundant options")
		return
	}
	o.given |= bit
	if name == "snapshot" {
		var v string
		switch arg.kind {
		case tEOF:
			o.err = pgerr.New(pgerr.SyntaxError, "%s requires a parameter", name)
			return
		case tUConst:
			v = strconv.FormatUint(arg.num, 10)
		default:
			v = arg.str
		}
		if v != "export" && v != "nothing" && v != "use" {
			o.err = pgerr.New(pgerr.InvalidParameterValue, "unrecognized value for CREATE_REPLICATION_SLOT option \"%s\": \"%s\"", name, v)
		}
		return
	}
	v, ok := boolOption(arg)
	if !ok {
		o.err = pgerr.New(pgerr.SyntaxError, "%s requires a Boolean value", name)
		return
	}
	if name == "reserve_wal" {
		o.reserveWAL = v
	}
}

// boolOption interprets an option value as PostgreSQL's defGetBoolean
// does: no value is true; an unsigned constant must be 0 or 1; a word or
// string must be true, false, on or off, in any case.
func boolOption(arg token) (bool, bool) {
	switch arg.kind {
	case tEOF:
		return true, true
	case tUConst:
		switch arg.num {
		case 0:
			return false, true
		case 1:
			return true, true
		}
		return false, false
	}
	switch s := arg.str; {
	case strings.EqualFold(s, "true"), strings.EqualFold(s, "on"):
		return true, true
	case strings.EqualFold(s, "false"), strings.EqualFold(s, "off"):
		return false, true
	}
	return false, false
}
