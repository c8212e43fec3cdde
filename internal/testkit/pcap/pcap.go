// Package pcap reads the router captures the tests replay to goflow2
// (internal/testkit/e2e/testdata): one Ethernet/IPv4/UDP datagram per
// classic pcap file.
package pcap

import (
	"encoding/binary"
	"fmt"
	"os"
)

// UDPPayload returns the UDP payload of the one packet in a classic
// little-endian pcap file of Ethernet frames carrying IPv4.
func UDPPayload(path string) ([]byte, error) {
	d, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(d) < 40 || binary.LittleEndian.Uint32(d) != 0xa1b2c3d4 {
		return nil, fmt.Errorf("%s: not a little-endian pcap file", path)
	}
	if n := binary.LittleEndian.Uint32(d[20:]); n != 1 {
		return nil, fmt.Errorf("%s: link type %d, want Ethernet", path, n)
	}
	captured := int(binary.LittleEndian.Uint32(d[32:]))
	if captured < 14+20+8 || 40+captured > len(d) {
		return nil, fmt.Errorf("%s: captured length %d does not fit the file", path, captured)
	}
	frame := d[40 : 40+captured]
	if binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return nil, fmt.Errorf("%s: not IPv4 over Ethernet", path)
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != 17 {
		return nil, fmt.Errorf("%s: IP protocol %d, want UDP", path, ip[9])
	}
	if ihl < 20 || ihl+8 > len(ip) {
		return nil, fmt.Errorf("%s: IPv4 header length %d does not fit the frame", path, ihl)
	}
	udp := ip[ihl:]
	udpLen := int(binary.BigEndian.Uint16(udp[4:]))
	if udpLen < 8 || udpLen > len(udp) {
		return nil, fmt.Errorf("%s: UDP length %d does not fit the frame", path, udpLen)
	}
	return udp[8:udpLen], nil
}
