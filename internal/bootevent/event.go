// Package bootevent follows network boots. The servers that see a boot's
// stages (DHCP, TFTP, HTTP, iSCSI) report them as Events to one Tracker;
// it groups them into one timeline per boot of a host, decides the host's
// boot state (booting at a stage, online, failed, stuck), keeps the
// counters the metrics export, hands the timelines to a Recorder (the
// inventory's store, bounded there) and pushes every event to subscribers
// (the web console's live view) and the log.
//
// It knows neither the servers nor the store: the app turns what a server
// saw into an Event naming the host.
package bootevent

import (
	"time"
)

// Stage is one step of a network boot, in the order a boot takes them.
type Stage string

const (
	// StageDHCP: the firmware's PXE DHCP exchange (DISCOVER, OFFER,
	// REQUEST, ACK).
	StageDHCP Stage = "dhcp"
	// StageTFTP: the firmware loaded iPXE over TFTP.
	StageTFTP Stage = "tftp"
	// StageIPXEDHCP: iPXE's own DHCP exchange (an iPXE ROM starts here).
	StageIPXEDHCP Stage = "ipxe-dhcp"
	// StageScript: iPXE fetched the host's script.
	StageScript Stage = "script"
	// StageKernel: iPXE fetched the kernel or initrd over HTTP (boot
	// mode kernel).
	StageKernel Stage = "kernel"
	// StageSANLogin: iPXE logged in to the host's disk (sanboot,
	// sanhook): the firmware reads the boot loader and kernel from it.
	StageSANLogin Stage = "san-login"
	// StageRootLogin: the operating system's initiator (the initramfs'
	// open-iscsi) logged in: root is being mounted. The boot is complete
	// and the host online from here.
	StageRootLogin Stage = "root-login"
	// StageSession: a later login of the running system (a reconnect).
	StageSession Stage = "session"
	// StageFailed: a step failed (iPXE's report, a refused login).
	StageFailed Stage = "failed"
	// StageStuck: the boot made no progress for Config.StuckAfter.
	StageStuck Stage = "stuck"
)

// Stages lists every stage in boot order (the last three are outcomes).
var Stages = []Stage{StageDHCP, StageTFTP, StageIPXEDHCP, StageScript, StageKernel, StageSANLogin,
	StageRootLogin, StageSession, StageFailed, StageStuck}

// rank orders the progress stages; outcomes rank 0.
func (s Stage) rank() int {
	switch s {
	case StageDHCP:
		return 1
	case StageTFTP:
		return 2
	case StageIPXEDHCP:
		return 3
	case StageScript:
		return 4
	case StageKernel:
		return 5
	case StageSANLogin:
		return 6
	case StageRootLogin, StageSession:
		return 7
	}
	return 0
}

// index is s's position in Stages, -1 for an unknown stage.
func (s Stage) index() int {
	for i, t := range Stages {
		if t == s {
			return i
		}
	}
	return -1
}

// Event is one thing a server saw of a boot.
type Event struct {
	Time time.Time `json:"time"`
	// Host is the host's name; "" for a machine that is no host (such
	// events reach subscribers and the log, no timeline).
	Host  string `json:"host,omitempty"`
	MAC   string `json:"mac,omitempty"`
	IP    string `json:"ip,omitempty"`
	Arch  string `json:"arch,omitempty"`
	Stage Stage  `json:"stage"`
	// Detail says what happened in words ("DISCOVER -> OFFER",
	// "ipxe.efi 1.0 MiB in 0.4 s", "open-iscsi login").
	Detail string `json:"detail,omitempty"`
	// Error is why the step failed, "" when it did not.
	Error string `json:"error,omitempty"`
	// Count is how many times the same event came in a row (a client
	// repeating a DHCP DISCOVER); 0 and 1 both mean once.
	Count int `json:"count,omitempty"`
}

// Result is how a boot stands or ended.
type Result string

const (
	Booting   Result = "booting"
	Completed Result = "completed"
	Failed    Result = "failed"
	Stuck     Result = "stuck"
)

// Boot is the timeline of one boot of a host.
type Boot struct {
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"` // time of the last event
	// Stage is the furthest stage the boot reached.
	Stage  Stage  `json:"stage"`
	Result Result `json:"result"`
	// Completed is when the operating system logged in (zero until then);
	// DurationSeconds the time from the first event to it.
	Completed       time.Time `json:"completed,omitzero"`
	DurationSeconds float64   `json:"duration_seconds,omitempty"`
	// Failure says why the boot failed or stuck, "" otherwise.
	Failure string `json:"failure,omitempty"`
	// Attempts counts the script fetches of this boot: iPXE asks again
	// after a failure without a new DHCP exchange.
	Attempts int     `json:"attempts"`
	Events   []Event `json:"events"`
	// DroppedEvents counts events left out of Events (it keeps the first
	// and the latest ones, MaxEvents in all).
	DroppedEvents int `json:"dropped_events,omitempty"`
}

// MaxEvents bounds the events a Boot keeps.
const MaxEvents = 48

// add appends e, merging it into the last event when it repeats it.
func (b *Boot) add(e Event) {
	if n := len(b.Events); n > 0 {
		last := &b.Events[n-1]
		if last.Stage == e.Stage && last.Detail == e.Detail && last.Error == e.Error && last.IP == e.IP {
			last.Count = max(last.Count, 1) + 1
			last.Time = e.Time
			return
		}
	}
	if len(b.Events) >= MaxEvents {
		// Keep the start of the boot and its latest events.
		half := MaxEvents / 2
		copy(b.Events[half:], b.Events[half+1:])
		b.Events = b.Events[:len(b.Events)-1]
		b.DroppedEvents++
	}
	b.Events = append(b.Events, e)
}

// clone is a deep copy of b (Events is shared otherwise).
func (b *Boot) clone() Boot {
	c := *b
	c.Events = append([]Event(nil), b.Events...)
	return c
}

// State is where a host stands now.
type State struct {
	// State is "offline", "booting", "online", "failed" or "stuck".
	State string `json:"state"`
	// Stage is the boot's furthest stage while booting, failed or stuck.
	Stage Stage `json:"stage,omitempty"`
	// Since is when the host came to this state: the boot's start while
	// booting, the operating system's login while online.
	Since   time.Time `json:"since,omitzero"`
	Failure string    `json:"failure,omitempty"`
}

// Host states.
const (
	StateOffline = "offline"
	StateBooting = "booting"
	StateOnline  = "online"
	StateFailed  = "failed"
	StateStuck   = "stuck"
)

// States lists the host states.
var States = []string{StateOffline, StateBooting, StateOnline, StateFailed, StateStuck}
