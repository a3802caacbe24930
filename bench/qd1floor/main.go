//go:build linux

// Command qd1floor measures the floor under a queue-depth-1 4 KiB iSCSI
// READ on this machine: TCP round trips on loopback that carry what such a
// READ carries (a 48-byte command out; a 48-byte header and 4096 bytes of
// data back) between two processes, with no iSCSI, SCSI or disk work on
// either side. scripts/bench-vs-tgt.sh prints it beside the measured round
// trips of tgt and diskless.
//
//	qd1floor [-n 20000]
//
// It re-runs itself as the answering process ("qd1floor -serve ADDR").
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"time"
)

const (
	commandLen = 48        // one iSCSI basic header segment
	answerLen  = 48 + 4096 // Data-In header with status, and the data
)

func main() {
	n := flag.Int("n", 20000, "round trips to time")
	serve := flag.String("serve", "", "answer on this listening address (internal: the child process)")
	flag.Parse()
	if *serve != "" {
		answer(*serve)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	child := exec.Command(os.Args[0], "-serve", addr)
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err = net.Dial("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	cmd, ans := make([]byte, commandLen), make([]byte, answerLen)
	roundTrip := func() {
		if _, err := c.Write(cmd); err != nil {
			log.Fatal(err)
		}
		if _, err := io.ReadFull(c, ans); err != nil {
			log.Fatal(err)
		}
	}
	for range 1000 { // warm up
		roundTrip()
	}
	start := time.Now()
	for range *n {
		roundTrip()
	}
	d := time.Since(start)
	fmt.Printf("loopback floor: %.1f us/round trip (%d round trips of %d+%d bytes between two processes)\n",
		float64(d.Nanoseconds())/float64(*n)/1e3, *n, commandLen, answerLen)
}

// answer serves one connection: a 4 KiB answer to every 48-byte command.
func answer(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	ln.Close()
	cmd, ans := make([]byte, commandLen), make([]byte, answerLen)
	for {
		if _, err := io.ReadFull(c, cmd); err != nil {
			return
		}
		if _, err := c.Write(ans); err != nil {
			return
		}
	}
}
