package scsi

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/diskless-boot/diskless/internal/disk"
)

// LUConfig configures a logical unit.
type LUConfig struct {
	// ReadOnly makes every command that modifies the medium fail with
	// DATA PROTECT, WRITE PROTECTED and sets WP in mode sense data.
	ReadOnly bool
	// BlockSize is the logical block length in bytes, a power of two
	// from 512 to 65536. Default 512.
	BlockSize int
	// VendorID (8), ProductID (16) and Revision (4) are the printable
	// ASCII identification of the standard INQUIRY data. Defaults
	// "DISKLESS", "VIRTUAL DISK", "0001".
	VendorID, ProductID, Revision string
	// Serial is the unit serial number (VPD page 80h), printable
	// ASCII, at most 252 bytes. Required unless NAA is set.
	Serial string
	// NAA is the 8-byte NAA designator of the LU (VPD page 83h), NAA
	// field 2h, 3h or 5h in the top nibble. Default: a 16-byte NAA 6h
	// designator derived from Serial (see naaCompanyID).
	NAA uint64
	// WriteCacheDisabled starts the LU with WCE=0 (every write made
	// durable before GOOD). Default false: writes go to the page cache
	// and SYNCHRONIZE CACHE or FUA make them durable. The initiator can
	// change it with MODE SELECT.
	WriteCacheDisabled bool
	// MaxTransferLength is the largest transfer in logical blocks
	// (Block Limits VPD page); longer commands fail with INVALID FIELD
	// IN CDB. Default 16 MiB worth of blocks: the iSCSI layer's limit of
	// one command. Not every initiator reads the page: iPXE's UEFI
	// sanboot asks for a whole file of the EFI system partition in one
	// READ, so this bounds the EFI programs a host can start from its
	// disk (GRUB with all its modules is 9.4 MiB).
	MaxTransferLength uint32
	// Removable makes the medium removable (RMB=1): START STOP UNIT with
	// LOEJ ejects and loads it, PREVENT ALLOW MEDIUM REMOVAL can lock it
	// in, and while it is out medium access fails with NOT READY, MEDIUM
	// NOT PRESENT. The image stays attached: loading brings back the
	// same medium.
	Removable bool
}

// naaCompanyID is the 24-bit IEEE company ID in derived NAA 6h
// designators. It is a CID (the X bit of the first octet set, SLAP
// quadrant "administratively assigned"), not a registered OUI: unique
// names come from the 100 bits of SHA-256 of the serial that follow it.
const naaCompanyID = 0xda1e55

// Limits the LU reports in the Block Limits VPD page and enforces.
const (
	defaultMaxTransferBytes = 16 << 20
	maxCompareAndWrite      = 255      // blocks (the CDB field is one byte)
	maxUnmapBlocks          = 1 << 20  // per UNMAP command
	maxUnmapDescriptors     = 4095     // what a 16-bit parameter list holds
	maxWriteSameBlocks      = 0xffff   // per WRITE SAME command (what WRITE SAME(10) can ask)
	optimalGranularityBytes = 4096     // page / file system block
	optimalTransferBytes    = 1 << 20  // reported optimal transfer length
	patternChunk            = 1 << 20  // buffer for WRITE SAME patterns and VERIFY
	maxUAQueue              = 16       // unit attentions queued per I_T nexus
	maxSerialLen            = 252      // VPD page 80h fits in 255 bytes
	minBlockSize            = 512      // smallest logical block
	maxBlockSize            = 64 << 10 // largest logical block
)

// LogicalUnit is a direct-access block device (SBC-3) backed by a
// disk.Device. It is safe for concurrent use: many commands from many I_T
// nexuses run at once; only the atomic commands (COMPARE AND WRITE,
// ORWRITE, WRITE ATOMIC) exclude the others.
type LogicalUnit struct {
	dev        disk.Device
	unmapper   disk.Unmapper
	zeroer     disk.Zeroer
	alloc      disk.AllocationReporter
	prefetcher disk.Prefetcher
	extenter   disk.FileExtenter
	lender     disk.Lender
	async      disk.AsyncReader
	// remote: every I/O of dev waits for the network (disk.Remote), so
	// none is quick.
	remote bool

	cfg     LUConfig
	bs      uint64
	shift   uint
	naa     []byte // 8 or 16 bytes
	maxXfer uint32

	blocks atomic.Uint64 // capacity in logical blocks

	// ioMu is held shared by every read and write of the medium and
	// exclusively (lockExclusive) by the read-modify-write and atomic commands (COMPARE
	// AND WRITE, ORWRITE, WRITE ATOMIC), which no other command may see
	// half done (SBC-3 5.2; SBC-4 atomic writes). Never taken twice by one
	// goroutine: a waiting writer would deadlock a nested RLock.
	ioMu sync.RWMutex
	// files holds exclusive writers back while READ data is still to be
	// sent from the file (see fileGate); use lockExclusive for ioMu.
	files fileGate

	// copies counts the EXTENDED COPY commands running on this LU as
	// copy manager (at most maxConcurrentCopies).
	copies atomic.Int32

	// Attachment to a Target (AddLU).
	target atomic.Pointer[Target]
	lun    atomic.Uint64

	// nexuses maps an I_T nexus to its state; copy on write so the
	// command path reads it without locking.
	nexuses atomic.Pointer[map[Nexus]*itNexus]

	// Flags read on every command.
	stopped atomic.Bool // START STOP UNIT with START=0
	ejected atomic.Bool // removable medium unloaded (LOEJ=1, START=0)
	wce     atomic.Bool // caching mode page WCE
	swp     atomic.Bool // control mode page SWP
	resv    atomic.Bool // a reservation (SPC-2 or persistent) exists

	// mu guards the reservation, persistent reservation and prevent
	// state and serializes changes to nexuses and the mode pages.
	mu       sync.Mutex
	spc2     *Nexus // RESERVE(6/10) holder
	pr       prState
	prevents map[Nexus]bool
}

// NewLogicalUnit makes a logical unit of dev. The LU uses the optional
// interfaces of dev it finds: disk.Unmapper enables thin provisioning
// (UNMAP, WRITE SAME with UNMAP, LBPME), disk.AllocationReporter GET LBA
// STATUS, disk.Prefetcher PRE-FETCH, disk.Zeroer fast zero writes,
// disk.FileExtenter READ data sent straight from the file, disk.Lender
// READ data sent from the device's own buffers, disk.AsyncReader READs
// that end in the device's completion (Target.Async), disk.Remote keeps
// READ and WRITE off the transport's reader (Target.Quick).
func NewLogicalUnit(dev disk.Device, cfg LUConfig) (*LogicalUnit, error) {
	if dev == nil {
		return nil, errors.New("scsi: nil device")
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 512
	}
	if cfg.BlockSize < minBlockSize || cfg.BlockSize > maxBlockSize || cfg.BlockSize&(cfg.BlockSize-1) != 0 {
		return nil, fmt.Errorf("scsi: block size %d: want a power of two from %d to %d",
			cfg.BlockSize, minBlockSize, maxBlockSize)
	}
	for _, f := range []struct {
		name string
		v    *string
		def  string
		max  int
	}{
		{"vendor ID", &cfg.VendorID, "DISKLESS", 8},
		{"product ID", &cfg.ProductID, "VIRTUAL DISK", 16},
		{"revision", &cfg.Revision, "0001", 4},
		{"serial", &cfg.Serial, "", maxSerialLen},
	} {
		if *f.v == "" {
			*f.v = f.def
		}
		if len(*f.v) > f.max || !printableASCII(*f.v) {
			return nil, fmt.Errorf("scsi: %s %q: want at most %d printable ASCII characters", f.name, *f.v, f.max)
		}
	}
	lu := &LogicalUnit{dev: dev, cfg: cfg, bs: uint64(cfg.BlockSize)}
	lu.shift = uint(bits.TrailingZeros64(lu.bs))
	switch {
	case cfg.NAA != 0:
		if n := cfg.NAA >> 60; n != 2 && n != 3 && n != 5 {
			return nil, fmt.Errorf("scsi: NAA %#x: NAA field %#x is not an 8-byte format (2h, 3h, 5h)", cfg.NAA, n)
		}
		lu.naa = binary.BigEndian.AppendUint64(nil, cfg.NAA)
	case cfg.Serial != "":
		lu.naa = deriveNAA(cfg.Serial)
	default:
		return nil, errors.New("scsi: LU needs a Serial or an NAA identifier")
	}
	lu.maxXfer = cfg.MaxTransferLength
	if lu.maxXfer == 0 {
		lu.maxXfer = uint32(defaultMaxTransferBytes / lu.bs)
	}
	lu.unmapper, _ = dev.(disk.Unmapper)
	lu.zeroer, _ = dev.(disk.Zeroer)
	lu.alloc, _ = dev.(disk.AllocationReporter)
	lu.prefetcher, _ = dev.(disk.Prefetcher)
	lu.extenter, _ = dev.(disk.FileExtenter)
	lu.lender, _ = dev.(disk.Lender)
	lu.async, _ = dev.(disk.AsyncReader)
	if r, ok := dev.(disk.Remote); ok {
		lu.remote = r.Remote()
	}
	blocks := uint64(dev.Size()) >> lu.shift
	if blocks == 0 {
		return nil, fmt.Errorf("scsi: device of %d bytes holds no %d-byte block", dev.Size(), lu.bs)
	}
	lu.blocks.Store(blocks)
	lu.wce.Store(!cfg.WriteCacheDisabled)
	empty := map[Nexus]*itNexus{}
	lu.nexuses.Store(&empty)
	lu.prevents = map[Nexus]bool{}
	return lu, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// deriveNAA makes an NAA 6h (IEEE Registered Extended) designator: the
// company ID then 100 bits of SHA-256 of name (SPC-4 7.8.6.6.5).
func deriveNAA(name string) []byte {
	h := sha256.Sum256([]byte(name))
	cid := uint32(naaCompanyID)
	b := make([]byte, 16)
	b[0] = 0x60 | byte(cid>>20)
	b[1] = byte(cid >> 12)
	b[2] = byte(cid >> 4)
	b[3] = byte(cid<<4) | h[0]&0x0f
	copy(b[4:], h[1:13])
	return b
}

// BlockSize is the logical block length in bytes.
func (lu *LogicalUnit) BlockSize() int { return int(lu.bs) }

// Blocks is the capacity in logical blocks.
func (lu *LogicalUnit) Blocks() uint64 { return lu.blocks.Load() }

// RefreshCapacity re-reads the device size. When the capacity changed
// (an image grown or shrunk underneath) it establishes the unit attention
// CAPACITY DATA HAS CHANGED for every I_T nexus (SBC-3 4.8) and reports
// changed.
func (lu *LogicalUnit) RefreshCapacity() (blocks uint64, changed bool) {
	blocks = uint64(lu.dev.Size()) >> lu.shift
	if lu.blocks.Swap(blocks) == blocks {
		return blocks, false
	}
	lu.uaAll(ascCapacityDataChanged, nil)
	return blocks, true
}

// checkRange fails a transfer outside the medium: LBA OUT OF RANGE, with
// the overflow of lba+n caught (SBC-3 4.5).
func (lu *LogicalUnit) checkRange(lba, n uint64) error {
	end := lba + n
	if end < lba || end > lu.blocks.Load() {
		return lbaOutOfRange()
	}
	return nil
}

// execute runs one command on this LU. The checks come in the order
// SAM-5 5.14 and SPC-4 5.12.1 imply: a pending unit attention (except for
// INQUIRY, REPORT LUNS and REQUEST SENSE), CDB validity, reservation
// conflict, readiness, write protection; then the command itself.
func (lu *LogicalUnit) execute(c *Command) Result {
	var res Result
	it := lu.nexus(c.Nexus)
	e, serr := lookupOp(lu, c.CDB)
	if (e == nil || e.flags&fNoUA == 0) && it.pending.Load() != 0 {
		if code, ok := it.pop(); ok {
			return res.fail(senseErr(SenseUnitAttention, code))
		}
	}
	if serr != nil {
		return res.fail(serr)
	}
	if serr := e.checkCDB(c.CDB, lu.usage(e)); serr != nil {
		return res.fail(serr)
	}
	if lu.resv.Load() && e.resv != resvSelf && lu.conflicts(c, e) {
		res.Status = StatusReservationConflict
		return res
	}
	if e.flags&fMedium != 0 {
		if serr := lu.notReady(); serr != nil {
			return res.fail(serr)
		}
	}
	if e.flags&fWrite != 0 {
		if serr := lu.writeProtected(); serr != nil {
			return res.fail(serr)
		}
	}
	if err := lu.dispatch(e, c, &res); err != nil {
		if err == errPending {
			return Result{Pending: true}
		}
		return res.fail(err)
	}
	return res
}

// writeProtected is the DATA PROTECT error for a write, if any.
func (lu *LogicalUnit) writeProtected() *SenseError {
	switch {
	case lu.cfg.ReadOnly:
		return senseErr(SenseDataProtect, ascWriteProtected)
	case lu.swp.Load():
		return senseErr(SenseDataProtect, ascSoftwareWriteProtected)
	}
	return nil
}

func (lu *LogicalUnit) dispatch(e *opcode, c *Command, r *Result) error {
	switch e.h {
	case hTestUnitReady:
		return nil
	case hRequestSense:
		return lu.requestSense(c, r)
	case hRead:
		return lu.read(c, r)
	case hWrite:
		return lu.write(c, r)
	case hInquiry:
		return lu.inquiry(c, r)
	case hModeSelect:
		return lu.modeSelect(c, r)
	case hReserve:
		return lu.reserve(c)
	case hRelease:
		return lu.release(c)
	case hModeSense:
		return lu.modeSense(c, r)
	case hStartStop:
		return lu.startStop(c)
	case hPreventAllow:
		return lu.preventAllow(c)
	case hReadCapacity10:
		return lu.readCapacity10(c, r)
	case hReadCapacity16:
		return lu.readCapacity16(c, r)
	case hVerify:
		return lu.verify(c, r)
	case hWriteVerify:
		return lu.writeVerify(c, r)
	case hSyncCache:
		return lu.syncCache(c)
	case hPrefetch:
		return lu.prefetch(c)
	case hWriteSame:
		return lu.writeSame(c, r)
	case hUnmap:
		return lu.unmap(c, r)
	case hPRIn:
		return lu.prIn(c, r)
	case hPROut:
		return lu.prOut(c, r)
	case hCompareAndWrite:
		return lu.compareAndWrite(c, r)
	case hGetLBAStatus:
		return lu.getLBAStatus(c, r)
	case hReportLUNs:
		return lu.reportLUNs(c, r)
	case hReportTPG:
		return lu.reportTPG(c, r)
	case hReportOpcodes:
		return lu.reportOpcodes(c, r)
	case hReportTMFs:
		return lu.reportTMFs(c, r)
	case hOrWrite:
		return lu.orWrite(c, r)
	case hReadDefectData:
		return lu.readDefectData(c, r)
	case hExtendedCopy:
		return lu.extendedCopy(c, r)
	case hReceiveCopy:
		return lu.receiveCopyResults(c, r)
	case hWriteAtomic:
		return lu.writeAtomic(c, r)
	}
	return fmt.Errorf("scsi: no handler for %#02x", e.op)
}

// errPending says the handler handed the command to the device, which
// ends it through Command.Done (a READ on a disk.AsyncReader).
var errPending = errors.New("scsi: command pending")

// errConflict makes a handler's command end in RESERVATION CONFLICT.
var errConflict = errors.New("scsi: reservation conflict")

// fail turns a handler error into the command's status: CHECK CONDITION
// with fixed-format sense data for a SenseError (the control mode page
// reports D_SENSE=0), RESERVATION CONFLICT, or HARDWARE ERROR, INTERNAL
// TARGET FAILURE for anything unexpected. Wanted is kept: the transport
// reports residuals on failed commands too.
func (r *Result) fail(err error) Result {
	r.N = 0
	var se *SenseError
	switch {
	case errors.As(err, &se):
		r.Status = StatusCheckCondition
		r.Sense = se.AppendFixed(make([]byte, 0, fixedSenseLen))
	case errors.Is(err, errConflict):
		r.Status = StatusReservationConflict
		r.Sense = nil
	default:
		r.Status = StatusCheckCondition
		r.Sense = senseErr(SenseHardwareError, ascInternalTargetFailure).AppendFixed(nil)
	}
	return *r
}

// diskError maps a device error to sense data: DATA PROTECT, SPACE
// ALLOCATION FAILED WRITE PROTECT when the backing store is full (SBC-3
// 4.7.3.7, thin provisioning), WRITE PROTECTED for a read-only device and
// for one that failed an earlier flush (disk.ErrDeviceFailed: the medium
// refuses writes until an operator reopens it, and the initiator must not
// retry into it) and for a fenced one (disk.ErrFenced: another server owns
// it now), otherwise MEDIUM ERROR with the first LBA of the
// transfer. The flush that fails first is a MEDIUM ERROR, WRITE ERROR.
func diskError(err error, lba uint64, write bool) *SenseError {
	var e *SenseError
	switch {
	case errors.Is(err, disk.ErrNoSpace):
		e = senseErr(SenseDataProtect, ascSpaceAllocFailedWP)
	case errors.Is(err, disk.ErrReadOnly), errors.Is(err, disk.ErrDeviceFailed), errors.Is(err, disk.ErrFenced):
		e = senseErr(SenseDataProtect, ascWriteProtected)
	case write:
		e = &SenseError{Key: SenseMediumError, Code: ascWriteError, Info: lba, InfoValid: true}
	default:
		e = &SenseError{Key: SenseMediumError, Code: ascUnrecoveredReadError, Info: lba, InfoValid: true}
	}
	e.Err = err
	return e
}

// flush makes completed writes durable, reporting a failure as MEDIUM
// ERROR, WRITE ERROR.
func (lu *LogicalUnit) flush() error {
	if err := lu.dev.Flush(); err != nil {
		return diskError(err, 0, true)
	}
	return nil
}
