package iscsiclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// maxSendTargets bounds the SendTargets answer collected over Text
// Response continuations (what diskless sends at most).
const maxSendTargets = 1 << 20

// Discover logs into a discovery session (cfg.Target is ignored), asks
// SendTargets=All (RFC 7143 appendix C) and logs out. It returns the
// names of the targets the initiator may see, in the target's order.
func Discover(ctx context.Context, cfg Config) ([]string, error) {
	cfg.Target = ""
	s, err := Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	names, err := s.sendTargets("All")
	if err != nil {
		return nil, err
	}
	return names, s.Logout()
}

// sendTargets sends a SendTargets Text Request and collects the answer,
// fetching continued responses (C bit) with empty requests carrying the
// target's Target Transfer Tag and the same task tag (RFC 7143 11.10).
func (s *Session) sendTargets(value string) ([]string, error) {
	var (
		itt  uint32
		ttt  = pdu.ReservedTag
		data = pdu.AppendText(nil, pdu.KV{Key: "SendTargets", Value: value})
		text []byte
	)
	for {
		t := newTask(0, nil, nil)
		t.itt = itt
		res, err := s.run(t, "SendTargets", false, func(t *task, cmdSN, expStatSN uint32) error {
			m := pdu.TextRequest{Final: true, ITT: t.itt, TTT: ttt, CmdSN: cmdSN, ExpStatSN: expStatSN}
			p := pdu.PDU{Data: data}
			m.Marshal(&p.BHS)
			return s.write(p)
		})
		if err != nil {
			return nil, err
		}
		m, err := pdu.ParseTextResponse(&res.hdr)
		if err != nil {
			return nil, fmt.Errorf("iscsiclient: SendTargets: %w: answered with %s", ErrProtocol, res.hdr.Opcode())
		}
		text = append(text, res.data...)
		if len(text) > maxSendTargets {
			return nil, fmt.Errorf("iscsiclient: SendTargets: %w: answer longer than %d bytes", ErrProtocol, maxSendTargets)
		}
		if m.Final || !m.Continue {
			break
		}
		itt, ttt, data = t.itt, m.TTT, nil
	}
	// One pair at a time: pdu.ParseText caps a negotiation's text at 64
	// KiB, and a SendTargets answer may be longer.
	var names []string
	for len(text) > 0 {
		i := bytes.IndexByte(text, 0)
		if i < 0 {
			i = len(text) - 1 // ParseText reports the missing NUL
		}
		kvs, err := pdu.ParseText(text[:i+1])
		if err != nil {
			return nil, fmt.Errorf("iscsiclient: SendTargets: %w: %w", ErrProtocol, err)
		}
		for _, kv := range kvs {
			if kv.Key == "TargetName" {
				names = append(names, kv.Value)
			}
		}
		text = text[i+1:]
	}
	return names, nil
}

// Logout closes the session with a Logout Request (RFC 7143 11.14) and
// waits for the target's answer and the end of the connection. Commands
// still outstanding then fail with an error wrapping ErrLoggedOut.
func (s *Session) Logout() error {
	t := newTask(0, nil, nil)
	res, err := s.run(t, "Logout", true, func(t *task, cmdSN, expStatSN uint32) error {
		m := pdu.LogoutRequest{Immediate: true, Reason: pdu.LogoutCloseSession, ITT: t.itt, CmdSN: cmdSN, ExpStatSN: expStatSN}
		var p pdu.PDU
		m.Marshal(&p.BHS)
		return s.write(p)
	})
	if err != nil {
		return err
	}
	m, err := pdu.ParseLogoutResponse(&res.hdr)
	if err != nil {
		return fmt.Errorf("iscsiclient: Logout: %w: answered with %s", ErrProtocol, res.hdr.Opcode())
	}
	if m.Response != pdu.LogoutSuccess {
		return fmt.Errorf("iscsiclient: Logout: response %d", m.Response)
	}
	<-s.readerDone
	s.pings.Wait()
	if err := s.ended(); !errors.Is(err, ErrLoggedOut) {
		return fmt.Errorf("iscsiclient: Logout: %w", err)
	}
	return nil
}
